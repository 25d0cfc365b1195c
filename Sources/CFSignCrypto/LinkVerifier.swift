import CFSignCore

/// Checks a signed request the way CloudFront does: key id known, signature valid for the policy
/// bytes, then time, viewer address and resource. Used by `cfsign verify` and `cfsign edge`.
public struct LinkVerifier: Sendable {
    /// Public keys by CloudFront key id; `anyID` (if set) is used for ids not in the map.
    public let keys: [String: PublicKey]
    public let anyID: PublicKey?

    public init(keys: [String: PublicKey], anyID: PublicKey? = nil) {
        self.keys = keys
        self.anyID = anyID
    }

    public func verify(_ request: SignedRequest, now: Int64, viewerIP: UInt32?) throws(Refusal) {
        guard let key = keys[request.keyPairID] ?? anyID else {
            throw Refusal(.unknownKey, "Key-Pair-Id \(request.keyPairID) is not a trusted key (known: \(keys.keys.sorted().joined(separator: ", ")))")
        }
        guard key.verify(signature: request.signature, message: request.policyBytes, hash: request.hash) else {
            throw Refusal(.badSignature, "the signature does not match the \(request.policy.kind.rawValue) policy for this URL under key \(request.keyPairID) with \(request.hash.rawValue) (tampered URL, wrong key, or the URL was changed after signing)")
        }
        try request.checkConditions(now: now, viewerIP: viewerIP)
    }
}
