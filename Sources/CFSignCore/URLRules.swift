/// The contract's rules for `url` and `resource` (PROTOCOL.md, "Job").
///
/// The policy bytes are the URL's bytes, so only printable ASCII without `"` and `\` is accepted:
/// then no JSON escaping rule can make two signers disagree.
package enum URLRules {
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
        // One pass over the contiguous bytes for the usual case, a clean value; the per-byte walk
        // below (slower through `String.UTF8View`) only runs to name the first bad byte.
        let clean = value.utf8.withContiguousStorageIfAvailable { bytes in
            !bytes.contains { $0 <= 0x20 || $0 >= 0x7F || $0 == 0x22 || $0 == 0x5C }
        }
        if clean == true { return }
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
        let schemeLength: Int
        // Bytes: the characters were checked to be printable ASCII, so this is String.hasPrefix.
        if bytes.starts(with: "https://".utf8) {
            schemeLength = 8
        } else if bytes.starts(with: "http://".utf8) {
            schemeLength = 7
        } else {
            try refuseScheme(url, bytes)
        }
        // Authority: up to the first '/', '?' or the end.
        var end = schemeLength
        while end < bytes.count, bytes[end] != UInt8(ascii: "/"), bytes[end] != UInt8(ascii: "?") { end += 1 }
        let authority = bytes[schemeLength..<end]
        try validateAuthority(authority)
        let pathEnd = bytes[end...].firstIndex(of: UInt8(ascii: "?")) ?? bytes.endIndex
        if let dot = dotSegment(in: bytes[end..<pathEnd]) {
            throw SigningError(.invalidURL, "url path \(String(decoding: bytes[end..<pathEnd], as: UTF8.self)) holds the dot segment \"\(dot)\"; a browser or origin removes it (\"..\" climbs a folder), so the link would name another object than the one signed. Give the path without . and .. segments")
        }
        if end < bytes.count, let q = bytes[end...].firstIndex(of: UInt8(ascii: "?")) {
            // Each parameter's name: from after '?' or '&' up to '=' or the next '&' (an empty
            // parameter, "&&", names nothing). Scanned in place: no arrays per parameter.
            var i = q + 1
            while i <= bytes.count {
                var nameEnd = i
                while nameEnd < bytes.count, bytes[nameEnd] != UInt8(ascii: "&"), bytes[nameEnd] != UInt8(ascii: "=") { nameEnd += 1 }
                var next = nameEnd
                while next < bytes.count, bytes[next] != UInt8(ascii: "&") { next += 1 }
                if next > i, let name = signingParameter(bytes[i..<nameEnd]) {
                    throw SigningError(.invalidURL, "url already has the signing query parameter \"\(name)\"; give the unsigned URL (none of Expires, Policy, Signature, Key-Pair-Id, Hash-Algorithm)")
                }
                i = next + 1
            }
        }
    }

    /// Why a URL that starts with neither `https://` nor `http://` is refused (always throws).
    private static func refuseScheme(_ url: String, _ bytes: [UInt8]) throws(SigningError) -> Never {
        let lower = url.lowercased()
        if lower.hasPrefix("https://") || lower.hasPrefix("http://") {
            throw SigningError(.invalidURL, "url scheme must be written in lower case: http:// or https://")
        } else if lower.hasPrefix("https:") || lower.hasPrefix("http:") {
            throw SigningError(.invalidURL, "url must start with http:// or https:// (two slashes), e.g. https://d111111abcdef8.cloudfront.net/path")
        } else if let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
                  bytes[..<colon].allSatisfy({ isSchemeCharacter($0) }), colon > 0,
                  !bytes[..<colon].contains(UInt8(ascii: "/")) {
            let scheme = String(decoding: bytes[..<colon], as: UTF8.self)
            throw SigningError(.invalidURL, "url scheme \"\(scheme)\" is not supported; CloudFront links are http:// or https://")
        }
        throw SigningError(.invalidURL, "url is not absolute; give the full link, e.g. https://d111111abcdef8.cloudfront.net/path")
    }

    /// The signing parameter these bytes spell, if any (byte equality: the URL is ASCII).
    private static func signingParameter(_ name: ArraySlice<UInt8>) -> String? {
        guard name.count >= 6, name.count <= 14 else { return nil }
        for p in signingParameters where name.elementsEqual(p.utf8) { return p }
        return nil
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
        let path = resourcePath(resource)
        if let dot = dotSegment(in: path) {
            throw SigningError(.invalidURL, "resource \(resource) holds the dot segment \"\(dot)\" in its path; a browser or origin removes it (\"..\" climbs a folder), so the policy's path would not be the path served. Give the resource without . and .. segments")
        }
        // `https://h/invoices/..*`: the wildcard then completes a `..` segment the literal part began.
        let literal = path.prefix { $0 != UInt8(ascii: "*") }
        let lastSegment = literal.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).last ?? literal[...]
        if literal.count < path.count, let dot = dotSegment(in: lastSegment) {
            throw SigningError(.invalidURL, "resource \(resource) ends its text before the first wildcard with the dot segment \"\(dot)\"; the wildcard could complete it into a \"..\" that climbs out of the folder. Put the wildcard after a '/' or a name")
        }
        if !Wildcard.matches(pattern: resource, text: url) {
            throw SigningError(.invalidResource, "resource \"\(resource)\" does not match url \"\(url)\"; a link whose URL is outside its resource can never be used ('*' matches any run of characters, '?' exactly one)")
        }
    }
}

// MARK: Paths as an origin reads them

extension URLRules {
    /// The part of a resource whose segments are judged: after `scheme://host` (when it names one)
    /// and before the first `?` (a wildcard or the query: either way not a path segment).
    static func resourcePath(_ resource: String) -> ArraySlice<UInt8> {
        let bytes = Array(resource.utf8)[...]
        let end = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.endIndex
        var start = bytes.startIndex
        if let colon = bytes[..<end].firstIndex(of: UInt8(ascii: ":")),
           bytes[colon...].starts(with: "://".utf8), bytes[..<colon].allSatisfy({ isSchemeCharacter($0) }) {
            let authority = colon + 3
            start = bytes[authority..<end].firstIndex(of: UInt8(ascii: "/")) ?? end
        }
        return bytes[start..<end]
    }

    /// The first dot segment of a path, as written (`..`, `%2e%2E`, `.%2e`, ...), or nil.
    ///
    /// A dot segment is a whole segment (between slashes, or at either end) of one or two dots in
    /// any mix of `.`, `%2e` and `%2E`. Path parameters do not hide one: `..;x` counts, because
    /// Tomcat and Jetty drop `;x` and then climb.
    public static func dotSegment(in path: some Collection<UInt8>) -> String? {
        let bytes = Array(path)
        // Each non-empty segment between '/'s; its name ends at ';' (path parameters). In place:
        // no array of segments.
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: "/") { end += 1 }
            if end > start {
                var nameEnd = start
                while nameEnd < end, bytes[nameEnd] != UInt8(ascii: ";") { nameEnd += 1 }
                if isDots(bytes[start..<nameEnd]) { return String(decoding: bytes[start..<end], as: UTF8.self) }
            }
            start = end + 1
        }
        return nil
    }

    /// One or two dots, each `.`, `%2e` or `%2E`.
    private static func isDots(_ s: ArraySlice<UInt8>) -> Bool {
        var dots = 0
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == UInt8(ascii: ".") {
                i += 1
            } else if s[i] == UInt8(ascii: "%"), s.endIndex - i >= 3, s[i + 1] == UInt8(ascii: "2"),
                      s[i + 2] == UInt8(ascii: "e") || s[i + 2] == UInt8(ascii: "E") {
                i += 3
            } else {
                return false
            }
            dots += 1
            if dots > 2 { return false }
        }
        return dots >= 1
    }

    /// The first encoded slash or backslash (`%2f`, `%2F`, `%5c`, `%5C`) in a path, as written, or nil.
    /// Origins differ on whether it separates segments, so under path rules it is refused.
    public static func encodedSlash(in path: some Collection<UInt8>) -> String? {
        let b = Array(path)
        var i = 0
        while i + 2 < b.count {
            if b[i] == UInt8(ascii: "%") {
                let pair = (b[i + 1], b[i + 2] | 0x20)
                if pair == (UInt8(ascii: "2"), UInt8(ascii: "f")) || pair == (UInt8(ascii: "5"), UInt8(ascii: "c")) {
                    return String(decoding: b[i...(i + 2)], as: UTF8.self)
                }
            }
            i += 1
        }
        return nil
    }

    /// A path with every percent-encoded unreserved character (`A-Z a-z 0-9 - . _ ~`) decoded, as
    /// RFC 3986 normalisation and origins read it: path rules judge `/%6Dedia/` as `/media/`.
    public static func normalizedForRules(_ path: String) -> String {
        guard path.utf8.contains(UInt8(ascii: "%")) else { return path }
        let b = Array(path.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 2 < b.count, let hi = hexValue(b[i + 1]), let lo = hexValue(b[i + 2]) {
                let c = hi << 4 | lo
                if isUnreserved(c) { out.append(c); i += 3; continue }
            }
            out.append(b[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }

    private static func isUnreserved(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
            || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "~")
    }
}

/// CloudFront's policy wildcards: `*` is any run of characters (including `/` and `?`), `?` is exactly
/// one character; everything else matches itself. The whole string is matched, query included.
package enum Wildcard {
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
