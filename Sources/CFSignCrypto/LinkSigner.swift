import CFSignCore

/// Turns a checked request into a signed URL or cookie set: plan, policy bytes, signature, assembly.
public struct LinkSigner: Sendable {
    public let limits: SigningLimits

    public init(limits: SigningLimits) { self.limits = limits }

    public func sign(_ request: SigningRequest, key: PrivateKey, keyID: String, now: Int64) throws(SigningError) -> SignedLink {
        let plan = try SigningPlan(request, now: now, limits: limits)
        let policy = plan.policy.bytes
        let signature = try key.sign(policy, hash: plan.hash)
        return SignedLink(plan: plan, policyBytes: policy, signature: signature, keyID: keyID)
    }
}
