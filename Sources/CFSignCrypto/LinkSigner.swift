import CFSignCore

/// Turns a checked request into a signed URL or cookie set: plan, policy bytes, signature, assembly.
///
/// Split in two so a signature can come from either path (see `SigningKey`): `prepare` builds the
/// policy and looks in the cache once; a miss yields a `PendingLink`, which a signature from a
/// signing lane or from an awaited KMS call completes with `finish` (cache insert and assembly).
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

    /// A link whose policy is built and which the cache did not hold: it needs one signature.
    public struct PendingLink: Sendable {
        public let plan: SigningPlan
        public let policy: [UInt8]
        public let keyID: String
        let cache: SignatureCache?
        let cacheKey: SignatureCache.Key?

        public var hash: HashAlgorithm { plan.hash }

        /// The signed link, with `signature` remembered in the cache.
        public func finish(_ signature: [UInt8]) -> SignedLink {
            if let cache, let cacheKey { cache.insert(signature, for: cacheKey) }
            return SignedLink(plan: plan, policyBytes: policy, signature: signature, keyID: keyID)
        }
    }

    public enum Prepared: Sendable {
        /// Signed already (the cache held this policy's signature).
        case signed(SignedLink)
        case needsSignature(PendingLink)
    }

    /// Plans the link for `key` and looks for its signature in the cache. A job naming no hash is
    /// signed with the worker's default, or SHA-256 where `key` cannot sign the default (a KMS key).
    public func prepare(_ request: SigningRequest, key: any SigningKey, keyID: String, now: Int64,
                        cache: SignatureCache? = nil, cacheScope: Int64 = 0) throws(SigningError) -> Prepared {
        var limits = self.limits
        let signable = key.signableHashes
        if request.hash == nil, !signable.contains(limits.defaultHash), signable.contains(.sha256) { limits.defaultHash = .sha256 }
        let hash = request.hash ?? limits.defaultHash
        // A key held elsewhere says why itself; for keys in memory OpenSSL's own check speaks (the plan's).
        if key.location != .memory, !signable.contains(hash) { throw SigningError(.unsupportedHash, key.cannotSign(hash)) }
        let plan = try SigningPlan(request, now: now, limits: limits, rules: rules)
        try rules.check(plan, now: now)
        let policy = plan.policy.bytes
        var cacheKey: SignatureCache.Key? = nil
        if let cache {
            let k = SignatureCache.Key(scope: cacheScope, keyID: keyID, hash: plan.hash, policy: policy)
            if let cached = cache.signature(for: k) {
                return .signed(SignedLink(plan: plan, policyBytes: policy, signature: cached, keyID: keyID))
            }
            cacheKey = k
        }
        return .needsSignature(PendingLink(plan: plan, policy: policy, keyID: keyID, cache: cache, cacheKey: cacheKey))
    }

    /// Signs a request in this thread. With a cache and its scope (the key-group version), a policy
    /// signed before with the same key and digest is not signed again.
    public func sign(_ request: SigningRequest, key: any SigningKey, keyID: String, now: Int64,
                     cache: SignatureCache? = nil, cacheScope: Int64 = 0) throws(SigningError) -> SignedLink {
        switch try prepare(request, key: key, keyID: keyID, now: now, cache: cache, cacheScope: cacheScope) {
        case .signed(let link): return link
        case .needsSignature(let pending): return pending.finish(try key.sign(pending.policy, hash: pending.hash))
        }
    }
}
