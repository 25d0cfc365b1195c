/// Why CloudFront would refuse a signed request, in plain words (`cfsign verify`, `cfsign edge`).
public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable {
        case missingKeyPairID = "missing_key_pair_id"
        case missingSignature = "missing_signature"
        case missingPolicy = "missing_policy"
        case malformedPolicy = "malformed_policy"
        case unsupportedHash = "unsupported_hash"
        case unknownKey = "unknown_key"
        case badSignature = "bad_signature"
        case expired = "expired"
        case notYetValid = "not_yet_valid"
        case needsViewerIP = "needs_viewer_ip"
        case ipNotAllowed = "ip_not_allowed"
        case resourceMismatch = "resource_mismatch"
        /// The URL's path holds a dot segment (`..`, `%2e%2e`, ...): no signer signs one, and an
        /// origin would read the path as another object than the one the policy names.
        case pathTraversal = "path_traversal"
    }

    public let reason: Reason
    public let message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { message }
}

/// The signing parts of a request, taken from its query (signed URL) or its cookies (signed cookies).
public struct SignedRequest: Sendable {
    /// The URL CloudFront checks the policy against: the request URL without the signing parameters,
    /// the other parameters kept in their original order.
    public let url: String
    public let keyPairID: String
    public let signature: [UInt8]
    public let hash: HashAlgorithm
    public let policy: Policy
    /// The exact bytes the signature covers.
    public let policyBytes: [UInt8]

    public static let cookieNames = ["CloudFront-Expires", "CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id", "CloudFront-Hash-Algorithm"]

    /// Splits a signed URL into the URL it signs and its signing parameters.
    public static func parse(signedURL: String) throws(Refusal) -> SignedRequest {
        let (base, params) = split(signedURL)
        return try make(url: base, lookup: { name in params.first { $0.0 == name }?.1 }, via: "query parameter ")
    }

    /// A request URL (signing parameters, if any, are stripped) with its signed cookies.
    public static func parse(url: String, cookies: [(name: String, value: String)]) throws(Refusal) -> SignedRequest {
        let (base, _) = split(url)
        return try make(url: base, lookup: { name in cookies.first { $0.name == "CloudFront-" + name }?.value }, via: "cookie CloudFront-")
    }

    /// The URL without `Expires`, `Policy`, `Signature`, `Key-Pair-Id`, `Hash-Algorithm`, and those
    /// parameters (first of each name wins).
    public static func split(_ url: String) -> (url: String, parameters: [(String, String)]) {
        guard let q = url.firstIndex(of: "?") else { return (url, []) }
        let base = url[..<q]
        var kept: [Substring] = []
        var signing: [(String, String)] = []
        for item in url[url.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false) {
            let name = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            if URLRules.signingParameters.contains(name) {
                let value = item.dropFirst(name.count + 1)
                signing.append((name, String(value)))
            } else {
                kept.append(item)
            }
        }
        return (kept.isEmpty ? String(base) : base + "?" + kept.joined(separator: "&"), signing)
    }

    private static func make(url: String, lookup: (String) -> String?, via: String) throws(Refusal) -> SignedRequest {
        guard let keyPairID = lookup("Key-Pair-Id"), !keyPairID.isEmpty else {
            throw Refusal(.missingKeyPairID, "missing \(via)Key-Pair-Id: the request is not signed (CloudFront answers 403 MissingKey)")
        }
        guard let signatureText = lookup("Signature"), !signatureText.isEmpty else {
            throw Refusal(.missingSignature, "missing \(via)Signature")
        }
        guard let signature = CloudFrontBase64.decode(signatureText) else {
            throw Refusal(.badSignature, "\(via)Signature is not CloudFront base64")
        }
        var hash = HashAlgorithm.sha1
        if let h = lookup("Hash-Algorithm") {
            guard let parsed = HashAlgorithm(wireName: h) else {
                throw Refusal(.unsupportedHash, "\(via)Hash-Algorithm \"\(h)\" is not SHA1 or SHA256")
            }
            hash = parsed
        }
        if let policyText = lookup("Policy") {
            guard let bytes = CloudFrontBase64.decode(policyText) else {
                throw Refusal(.malformedPolicy, "\(via)Policy is not CloudFront base64")
            }
            let policy = try parsePolicy(bytes, url: url)
            return SignedRequest(url: url, keyPairID: keyPairID, signature: signature, hash: hash, policy: policy, policyBytes: bytes)
        }
        guard let expiresText = lookup("Expires") else {
            throw Refusal(.missingPolicy, "neither \(via)Expires (canned policy) nor \(via)Policy (custom policy) is present")
        }
        guard let expires = Int64(expiresText), expires >= 0 else {
            throw Refusal(.malformedPolicy, "\(via)Expires \"\(expiresText)\" is not epoch seconds")
        }
        let policy = Policy(kind: .canned, resource: url, expiresAt: expires)
        return SignedRequest(url: url, keyPairID: keyPairID, signature: signature, hash: hash, policy: policy, policyBytes: policy.bytes)
    }

    /// Reads a custom policy document: one statement, `Resource` (default `*`), `DateLessThan`
    /// required, `IpAddress` and `DateGreaterThan` optional.
    static func parsePolicy(_ bytes: [UInt8], url: String) throws(Refusal) -> Policy {
        func bad(_ why: String) -> Refusal { Refusal(.malformedPolicy, "the policy is malformed: \(why)") }
        let doc: JSONValue
        do throws(JSONObjectDocument.Failure) {
            doc = try JSONObjectDocument(parsing: bytes).refusingDuplicates().value
        } catch {
            throw bad("\(error)")
        }
        guard case .array(let statements)? = doc[member: "Statement"], statements.count == 1 else {
            throw bad("it needs exactly one Statement")
        }
        let statement = statements[0]
        var resource = "*"
        if let r = statement[member: "Resource"] {
            guard case .string(let s) = r else { throw bad("Resource is not a string") }
            resource = s
        }
        guard let condition = statement[member: "Condition"], case .object = condition else { throw bad("no Condition") }
        func epoch(_ name: String) throws(Refusal) -> Int64? {
            guard let c = condition[member: name] else { return nil }
            guard case .integer(let t)? = c[member: "AWS:EpochTime"] else { throw bad("\(name) has no integer AWS:EpochTime") }
            return t
        }
        guard let expires = try epoch("DateLessThan") else { throw bad("no DateLessThan (every policy needs an expiry)") }
        let starts = try epoch("DateGreaterThan")
        var ip: IPv4Range?
        if let c = condition[member: "IpAddress"] {
            guard case .string(let text)? = c[member: "AWS:SourceIp"] else { throw bad("IpAddress has no AWS:SourceIp string") }
            do { ip = try IPv4Range(parsing: text) } catch { throw bad("AWS:SourceIp \"\(text)\" is not an IPv4 CIDR") }
        }
        return Policy(kind: .custom, resource: resource, expiresAt: expires, startsAt: starts, ip: ip)
    }

    /// The path of an absolute URL: after `scheme://authority`, before `?`.
    static func path(of url: String) -> ArraySlice<UInt8> {
        let b = Array(url.utf8)[...]
        var start = b.startIndex
        if let r = url.utf8.firstRange(of: "://".utf8) {
            let afterScheme = url.utf8.distance(from: url.utf8.startIndex, to: r.upperBound)
            start = b[afterScheme...].firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? b.endIndex
        }
        let end = b[start...].firstIndex(of: UInt8(ascii: "?")) ?? b.endIndex
        return b[start..<end]
    }

    /// Everything CloudFront checks except the signature: time, viewer address, resource.
    /// `viewerIP` nil means unknown, which a policy with an IP condition cannot accept.
    public func checkConditions(now: Int64, viewerIP: UInt32?) throws(Refusal) {
        // A wildcard resource matches `/invoices/../secret.pdf` as text; refuse what no worker signs.
        if let dot = URLRules.dotSegment(in: Self.path(of: url)) {
            throw Refusal(.pathTraversal, "the URL \(url) has the dot segment \"\(dot)\" in its path; no signer signs such a path, and an origin would serve another object than the one the policy names")
        }
        if now >= policy.expiresAt {
            throw Refusal(.expired, "the link expired at \(Timestamps.iso8601(policy.expiresAt)) (\(policy.expiresAt)); it is now \(Timestamps.iso8601(now))")
        }
        if let starts = policy.startsAt, now < starts {
            throw Refusal(.notYetValid, "the link is valid only from \(Timestamps.iso8601(starts)) (\(starts)); it is now \(Timestamps.iso8601(now))")
        }
        if let range = policy.ip {
            guard let viewerIP else {
                throw Refusal(.needsViewerIP, "the policy allows only viewers from \(range); this check needs the viewer's address (--ip)")
            }
            guard range.contains(viewerIP) else {
                throw Refusal(.ipNotAllowed, "the viewer's address is outside \(range), the only range the policy allows")
            }
        }
        if !Wildcard.matches(pattern: policy.resource, text: url) {
            throw Refusal(.resourceMismatch, "the URL \(url) does not match the policy's resource \(policy.resource)")
        }
    }
}
