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
        let plan = try SigningPlan(request, now: now, limits: limits, rules: rules)
        try rules.check(plan, now: now)
        return plan
    }

    /// Signs a request. With a cache and its scope (the key-group version), a policy signed before
    /// with the same key and digest is not signed again.
    public func sign(_ request: SigningRequest, key: any SigningKey, keyID: String, now: Int64,
                     cache: SignatureCache? = nil, cacheScope: Int64 = 0) throws(SigningError) -> SignedLink {
        let plan = try plan(request, now: now)
        let policy = plan.policy.bytes
        let signature: [UInt8]
        if let cache {
            let cacheKey = SignatureCache.Key(scope: cacheScope, keyID: keyID, hash: plan.hash, policy: policy)
            if let cached = cache.signature(for: cacheKey) {
                signature = cached
            } else {
                signature = try key.sign(policy, hash: plan.hash)
                cache.insert(signature, for: cacheKey)
            }
        } else {
            signature = try key.sign(policy, hash: plan.hash)
        }
        return SignedLink(plan: plan, policyBytes: policy, signature: signature, keyID: keyID)
    }
}
