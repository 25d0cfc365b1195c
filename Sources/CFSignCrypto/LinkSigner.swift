import CFSignCore

/// Turns a checked request into a signed URL or cookie set: plan, policy bytes, signature, assembly.
public struct LinkSigner: Sendable {
    public let limits: SigningLimits
    /// The worker's signing policy (hosts, paths, lifetimes, wildcards); empty for `cfsign sign`.
    public let rules: SigningRules

    public init(limits: SigningLimits, rules: SigningRules = SigningRules()) {
        self.limits = limits
        self.rules = rules
    }

    /// The plan for a request under the limits and rules, without signing (for refusals and audits).
    public func plan(_ request: SigningRequest, now: Int64) throws(SigningError) -> SigningPlan {
        let plan = try SigningPlan(request, now: now, limits: limits)
        try rules.check(plan, now: now)
        return plan
    }

    public func sign(_ request: SigningRequest, key: PrivateKey, keyID: String, now: Int64) throws(SigningError) -> SignedLink {
        let plan = try plan(request, now: now)
        let policy = plan.policy.bytes
        let signature = try key.sign(policy, hash: plan.hash)
        return SignedLink(plan: plan, policyBytes: policy, signature: signature, keyID: keyID)
    }
}
