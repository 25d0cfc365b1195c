/// An IPv4 address range for the policy's `AWS:SourceIp` condition.
///
/// CloudFront does not evaluate IPv6 addresses in `AWS:SourceIp`, so IPv6 is refused rather than
/// producing links that no viewer can use.
public struct IPv4Range: Sendable, Hashable, CustomStringConvertible {
    public let address: UInt32
    public let prefixLength: Int

    /// The text written into the policy: `a.b.c.d/n` (a bare address becomes `/32`, as botocore does).
    public var description: String {
        "\(address >> 24).\((address >> 16) & 0xFF).\((address >> 8) & 0xFF).\(address & 0xFF)/\(prefixLength)"
    }

    public init(address: UInt32, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    public var mask: UInt32 { prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - prefixLength) }

    public func contains(_ ip: UInt32) -> Bool { ip & mask == address }

    /// Parses `a.b.c.d` or `a.b.c.d/n` strictly (decimal, no leading zeros, host bits clear).
    public init(parsing text: String) throws(SigningError) {
        if text.contains(":") {
            throw SigningError(.invalidIP, "ip \"\(text)\" is IPv6; CloudFront does not evaluate IPv6 addresses in AWS:SourceIp, so give an IPv4 address or CIDR range")
        }
        let parts = text.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count <= 2 else {
            throw SigningError(.invalidIP, "ip \"\(text)\" is not an IPv4 address or CIDR range (e.g. 192.0.2.7 or 192.0.2.0/24)")
        }
        guard let address = IPv4Range.parseAddress(parts[0]) else {
            throw SigningError(.invalidIP, "ip \"\(text)\" is not an IPv4 address or CIDR range: write four decimal numbers 0-255 without leading zeros, e.g. 192.0.2.7 or 192.0.2.0/24")
        }
        var prefix = 32
        if parts.count == 2 {
            let p = parts[1]
            guard !p.isEmpty, p.count <= 2, p.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  !(p.count > 1 && p.first == "0"), let n = Int(p) else {
                throw SigningError(.invalidIP, "ip \"\(text)\" has an invalid prefix length; use /0 to /32 without leading zeros")
            }
            guard n <= 32 else {
                throw SigningError(.invalidIP, "ip \"\(text)\" has a prefix over 32; an IPv4 prefix is /0 to /32")
            }
            prefix = n
        }
        let range = IPv4Range(address: address, prefixLength: prefix)
        if address & ~range.mask != 0 {
            let network = IPv4Range(address: address & range.mask, prefixLength: prefix)
            throw SigningError(.invalidIP, "ip \"\(text)\" has host bits set below the /\(prefix) prefix; say \(network)")
        }
        self = range
    }

    /// A dotted-quad IPv4 address, strictly; nil if it is not one.
    public static func parseAddress(_ text: Substring) -> UInt32? {
        let octets = text.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var value: UInt32 = 0
        for o in octets {
            guard !o.isEmpty, o.count <= 3, o.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  !(o.count > 1 && o.first == "0"), let n = UInt32(o), n <= 255 else { return nil }
            value = value << 8 | n
        }
        return value
    }

    public static func parseAddress(_ text: String) -> UInt32? { parseAddress(text[...]) }
}
