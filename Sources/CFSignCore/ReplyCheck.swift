/// Checks that a signed reply answers the request that was sent (PROTOCOL.md, "Checking replies").
///
/// Any producer of a namespace can make a worker push a reply, with an id of its choosing, onto
/// any `{NS}:reply:*` list of that namespace (reply injection). A producer that only trusts a
/// reply matching what it asked for cannot be handed a link for another object, another policy
/// or another lifetime; at worst its call fails or times out.
public enum ReplyCheck {
    /// How far the producer's clock and the worker's may differ (seconds).
    public static let clockSkewTolerance: Int64 = 300

    /// The reason a successful reply does not match `request`, or nil when it matches.
    ///
    /// - Parameters:
    ///   - url: the reply's signed URL (for a URL request).
    ///   - cookies: the reply's cookies (for a cookie request).
    ///   - expiresAt: the reply's `expires_at`.
    ///   - keyID: the reply's `key_id`.
    ///   - askedAt: epoch seconds when the job was pushed; `now`: when the reply arrived.
    ///   - rounding: the largest `expiry_rounding` the fleet's workers apply (0: none).
    public static func mismatch(
        url: String?, cookies: [(name: String, value: String)]?, expiresAt: Int64, keyID: String,
        request: SigningRequest, askedAt: Int64, now: Int64, rounding: Int64 = 0
    ) -> String? {
        let signed: SignedRequest
        do throws(Refusal) {
            switch (request.output, url, cookies) {
            case (.url, let u?, _):
                let separator = request.url.contains("?") ? "&" : "?"
                guard u.hasPrefix(request.url + separator) else { return "the signed URL is not for \(request.url)" }
                signed = try SignedRequest.parse(signedURL: u)
                guard signed.url == request.url else { return "the signed URL carries other parameters than \(request.url)" }
            case (.cookies, _, let c?):
                signed = try SignedRequest.parse(url: request.url, cookies: c)
            default:
                return "the reply carries \(url != nil ? "a URL" : "cookies"), the request asked for \(request.output.rawValue)"
            }
        } catch {
            return "the reply's link cannot be read: \(error.message)"
        }
        let policy = signed.policy
        if policy.kind != (request.isCanned ? .canned : .custom) {
            return "the reply has a \(policy.kind.rawValue) policy, the request needs a \(request.isCanned ? "canned" : "custom") one"
        }
        let resource = request.resource ?? request.url
        if policy.resource != resource { return "the policy's resource is \(policy.resource), not \(resource)" }
        if policy.startsAt != request.startsAt { return "the policy's start time differs from the request's" }
        if policy.ip != request.ip { return "the policy's IP condition differs from the request's" }
        if policy.expiresAt != expiresAt { return "the link's expiry differs from the reply's expires_at" }
        if signed.keyPairID != keyID { return "the link's Key-Pair-Id differs from the reply's key_id" }
        if let asked = request.keyID, asked != keyID { return "the link is signed with key \(keyID), the request asked for \(asked)" }
        let roundUp = max(0, rounding, request.roundExpiry ?? 0)
        let (earliest, latest): (Int64, Int64)
        switch request.expiry {
        case .at(let t):
            (earliest, latest) = (t, t.addingSaturating(request.roundExpiry ?? 0))
        case .after(let seconds):
            earliest = askedAt.addingSaturating(seconds).addingSaturating(-clockSkewTolerance)
            latest = now.addingSaturating(seconds).addingSaturating(roundUp).addingSaturating(clockSkewTolerance)
        }
        if expiresAt < earliest || expiresAt > latest {
            return "the link expires at \(expiresAt), outside what the request allows (\(earliest)-\(latest))"
        }
        return nil
    }
}
