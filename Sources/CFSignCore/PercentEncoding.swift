/// RFC 3986 percent-decoding, shared by the URIs and lists cfsign reads (`pkcs11:` key URIs, the
/// `OTEL_*` header and resource lists). Strict: `%` must be followed by two hex digits.
package enum PercentEncoding {
    /// The bytes `text` stands for; nil when a `%` is not followed by two hex digits.
    package static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var u = text.utf8[...]
        while let b = u.popFirst() {
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard let high = u.popFirst().flatMap(hexValue), let low = u.popFirst().flatMap(hexValue) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
