/// The contract's rules for `url` and `resource` (PROTOCOL.md, "Job").
///
/// The policy bytes are the URL's bytes, so only printable ASCII without `"` and `\` is accepted:
/// then no JSON escaping rule can make two signers disagree.
public enum URLRules {
    public static let maximumLength = 8 * 1024

    /// The query parameters CloudFront reserves for signing; a URL that already has one is refused.
    public static let signingParameters: Set<String> = ["Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"]

    /// Checks the character rules shared by `url` and `resource`; `field` names it in the message.
    static func checkCharacters(_ value: String, field: String, code: ErrorCode) throws(SigningError) {
        if value.isEmpty { throw SigningError(code, "\(field) is empty") }
        let count = value.utf8.count
        if count > maximumLength {
            throw SigningError(code, "\(field) is \(count) bytes; at most \(maximumLength) are allowed")
        }
        var offset = 0
        for b in value.utf8 {
            switch b {
            case 0x20:
                throw SigningError(code, "\(field) contains a space at byte \(offset); percent-encode it as %20")
            case 0x22:
                throw SigningError(code, "\(field) contains '\"' at byte \(offset); percent-encode it as %22")
            case 0x5C:
                throw SigningError(code, "\(field) contains '\\' at byte \(offset); percent-encode it as %5C")
            case 0..<0x20, 0x7F:
                throw SigningError(code, "\(field) contains a control character (0x\(hex(b))) at byte \(offset); percent-encode it")
            case 0x80...:
                throw SigningError(code, "\(field) contains a non-ASCII character at byte \(offset); percent-encode it as UTF-8 (%XX)")
            default: break
            }
            offset += 1
        }
    }

    private static func hex(_ b: UInt8) -> String {
        let s = String(b, radix: 16, uppercase: true)
        return s.count == 1 ? "0" + s : s
    }

    /// Validates an object URL: absolute http(s), printable ASCII, no fragment, no signing parameters.
    public static func validateURL(_ url: String) throws(SigningError) {
        try checkCharacters(url, field: "url", code: .invalidURL)
        let bytes = Array(url.utf8)
        if let hash = bytes.firstIndex(of: UInt8(ascii: "#")) {
            _ = hash
            throw SigningError(.invalidURL, "url has a fragment (#...); CloudFront never sees fragments, so sign the URL without it")
        }
        let lower = url.lowercased()
        let schemeLength: Int
        if url.hasPrefix("https://") {
            schemeLength = 8
        } else if url.hasPrefix("http://") {
            schemeLength = 7
        } else if lower.hasPrefix("https://") || lower.hasPrefix("http://") {
            throw SigningError(.invalidURL, "url scheme must be written in lower case: http:// or https://")
        } else if lower.hasPrefix("https:") || lower.hasPrefix("http:") {
            throw SigningError(.invalidURL, "url must start with http:// or https:// (two slashes), e.g. https://d111111abcdef8.cloudfront.net/path")
        } else if let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
                  bytes[..<colon].allSatisfy({ isSchemeCharacter($0) }), colon > 0,
                  !bytes[..<colon].contains(UInt8(ascii: "/")) {
            let scheme = String(decoding: bytes[..<colon], as: UTF8.self)
            throw SigningError(.invalidURL, "url scheme \"\(scheme)\" is not supported; CloudFront links are http:// or https://")
        } else {
            throw SigningError(.invalidURL, "url is not absolute; give the full link, e.g. https://d111111abcdef8.cloudfront.net/path")
        }
        // Authority: up to the first '/', '?' or the end.
        var end = schemeLength
        while end < bytes.count, bytes[end] != UInt8(ascii: "/"), bytes[end] != UInt8(ascii: "?") { end += 1 }
        let authority = bytes[schemeLength..<end]
        try validateAuthority(authority)
        if end < bytes.count, let q = bytes[end...].firstIndex(of: UInt8(ascii: "?")) {
            let query = bytes[(q + 1)...]
            for parameter in query.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
                let name = parameter.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false).first ?? parameter[...]
                let nameText = String(decoding: name, as: UTF8.self)
                if signingParameters.contains(nameText) {
                    throw SigningError(.invalidURL, "url already has the signing query parameter \"\(nameText)\"; give the unsigned URL (none of Expires, Policy, Signature, Key-Pair-Id, Hash-Algorithm)")
                }
            }
        }
    }

    private static func isSchemeCharacter(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2B || b == 0x2D || b == 0x2E
    }

    private static func validateAuthority(_ authority: ArraySlice<UInt8>) throws(SigningError) {
        if authority.isEmpty {
            throw SigningError(.invalidURL, "url has no host; give the full link, e.g. https://d111111abcdef8.cloudfront.net/path")
        }
        if authority.contains(UInt8(ascii: "@")) {
            throw SigningError(.invalidURL, "url has user information (user@host); CloudFront links carry no credentials")
        }
        var host = authority
        var port: ArraySlice<UInt8>? = nil
        if authority.first == UInt8(ascii: "[") {
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")) else {
                throw SigningError(.invalidURL, "url has an IPv6 host without its closing ']'")
            }
            let inside = authority[(authority.startIndex + 1)..<close]
            if inside.isEmpty || !inside.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }) {
                throw SigningError(.invalidURL, "url has an IPv6 host that is not an address: [\(String(decoding: inside, as: UTF8.self))]")
            }
            host = authority[authority.startIndex...close]
            let rest = authority[(close + 1)...]
            if !rest.isEmpty {
                guard rest.first == UInt8(ascii: ":") else {
                    throw SigningError(.invalidURL, "url has unexpected characters after the IPv6 host")
                }
                port = rest.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: UInt8(ascii: ":")) {
            host = authority[..<colon]
            port = authority[(colon + 1)...]
        }
        if host.isEmpty {
            throw SigningError(.invalidURL, "url has no host; give the full link, e.g. https://d111111abcdef8.cloudfront.net/path")
        }
        if let port {
            guard !port.isEmpty, port.count <= 5, port.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let n = Int(String(decoding: port, as: UTF8.self)), n >= 1, n <= 65535 else {
                throw SigningError(.invalidURL, "url has an invalid port \"\(String(decoding: port, as: UTF8.self))\"; a port is a number from 1 to 65535")
            }
        }
    }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
    }

    /// Validates a policy resource against the URL it will be used with.
    public static func validateResource(_ resource: String, url: String) throws(SigningError) {
        try checkCharacters(resource, field: "resource", code: .invalidResource)
        if !Wildcard.matches(pattern: resource, text: url) {
            throw SigningError(.invalidResource, "resource \"\(resource)\" does not match url \"\(url)\"; a link whose URL is outside its resource can never be used ('*' matches any run of characters, '?' exactly one)")
        }
    }
}

/// CloudFront's policy wildcards: `*` is any run of characters (including `/` and `?`), `?` is exactly
/// one character; everything else matches itself. The whole string is matched, query included.
public enum Wildcard {
    public static func matches(pattern: String, text: String) -> Bool {
        let p = Array(pattern.utf8)
        let t = Array(text.utf8)
        return matches(pattern: p[...], text: t[...])
    }

    /// Iterative matcher with single-star backtracking: O(|p|·|t|) worst case, no recursion.
    public static func matches(pattern p: ArraySlice<UInt8>, text t: ArraySlice<UInt8>) -> Bool {
        var pi = p.startIndex, ti = t.startIndex
        var starP = -1, starT = -1
        let star = UInt8(ascii: "*"), question = UInt8(ascii: "?")
        while ti < t.endIndex {
            if pi < p.endIndex, p[pi] == question || p[pi] == t[ti] {
                pi += 1; ti += 1
            } else if pi < p.endIndex, p[pi] == star {
                starP = pi; starT = ti; pi += 1
            } else if starP >= 0 {
                pi = starP + 1; starT += 1; ti = starT
            } else {
                return false
            }
        }
        while pi < p.endIndex, p[pi] == star { pi += 1 }
        return pi == p.endIndex
    }
}
