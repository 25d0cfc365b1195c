/// A worker's signing policy: which links it will sign at all. Without rules any producer could ask
/// for a link to anything under the distribution, for as long as the lifetime limit allows.
///
/// A job outside the rules is answered with `policy_denied`, and the message names the rule.
public struct SigningRules: Sendable, Equatable {
    /// How a job's `resource` may use wildcards.
    public enum Wildcards: String, Sendable, CaseIterable {
        /// Any resource that matches the URL (the contract's default).
        case any
        /// The text before the first `*` or `?` must name the scheme, the whole host and an allowed
        /// path prefix: never a bare `*`, never wider than one prefix.
        case withinPrefix = "within-prefix"
        /// No `*` or `?` at all.
        case none
    }

    /// Hosts (with port, if the URL has one), lower case; empty means any host.
    public var allowedHosts: [String]
    /// Path prefixes such as `/invoices/`; empty means any path.
    public var allowedPathPrefixes: [String]
    /// Shorter lifetime limits for some path prefixes (longest matching prefix wins).
    public var prefixLifetimes: [(prefix: String, seconds: Int64)]
    public var wildcards: Wildcards

    public init(allowedHosts: [String] = [], allowedPathPrefixes: [String] = [], prefixLifetimes: [(prefix: String, seconds: Int64)] = [], wildcards: Wildcards = .any) {
        self.allowedHosts = allowedHosts.map { $0.lowercased() }
        self.allowedPathPrefixes = allowedPathPrefixes
        self.prefixLifetimes = prefixLifetimes
        self.wildcards = wildcards
    }

    public static func == (a: SigningRules, b: SigningRules) -> Bool {
        a.allowedHosts == b.allowedHosts && a.allowedPathPrefixes == b.allowedPathPrefixes && a.wildcards == b.wildcards
            && a.prefixLifetimes.count == b.prefixLifetimes.count
            && zip(a.prefixLifetimes, b.prefixLifetimes).allSatisfy { $0.prefix == $1.prefix && $0.seconds == $1.seconds }
    }

    /// True when no rule is set: everything the contract allows is signed.
    public var isEmpty: Bool { allowedHosts.isEmpty && allowedPathPrefixes.isEmpty && prefixLifetimes.isEmpty && wildcards == .any }

    /// One line for the start-up log.
    public var summary: String {
        if isEmpty { return "none: any host, path and wildcard up to max_lifetime" }
        var parts: [String] = []
        parts.append("hosts " + (allowedHosts.isEmpty ? "any" : allowedHosts.joined(separator: ",")))
        parts.append("paths " + (allowedPathPrefixes.isEmpty ? "any" : allowedPathPrefixes.joined(separator: ",")))
        if !prefixLifetimes.isEmpty { parts.append("lifetimes " + prefixLifetimes.map { "\($0.prefix)=\(Durations.describe($0.seconds))" }.joined(separator: ",")) }
        parts.append("wildcards \(wildcards.rawValue)")
        return parts.joined(separator: "; ")
    }

    /// True when a path rule is set: then paths are judged, and an encoded slash is refused.
    public var hasPathRules: Bool { !allowedPathPrefixes.isEmpty || !prefixLifetimes.isEmpty }

    /// Checks a planned link against the rules: its URL, and the reach of its `resource`.
    public func check(_ plan: SigningPlan, now: Int64) throws(SigningError) {
        if isEmpty { return }
        let lifetime = Self.lifetime(plan.expiresAt, now: now)
        let (host, rawPath) = Self.hostAndPath(plan.request.url)
        let path = URLRules.normalizedForRules(rawPath)
        if !allowedHosts.isEmpty, !allowedHosts.contains(host.lowercased()) {
            throw SigningError(.policyDenied, "host \(host) is not allowed by this worker's signing policy (allowed_hosts: \(allowedHosts.joined(separator: ", ")))")
        }
        if hasPathRules {
            if let slash = URLRules.encodedSlash(in: rawPath.utf8) {
                throw SigningError(.policyDenied, "path \(rawPath) holds the encoded slash \(slash); origins differ on whether it separates folders, so this worker's path rules (allowed_path_prefixes, prefix_max_lifetimes) cannot judge it. Give the path with plain '/'")
            }
            if let resource = plan.request.resource, let slash = URLRules.encodedSlash(in: URLRules.resourcePath(resource)) {
                throw SigningError(.policyDenied, "resource \(resource) holds the encoded slash \(slash) in its path; origins differ on whether it separates folders, so this worker's path rules (allowed_path_prefixes, prefix_max_lifetimes) cannot judge it. Give the resource with plain '/'")
            }
        }
        if !allowedPathPrefixes.isEmpty, !allowedPathPrefixes.contains(where: { path.hasPrefix($0) }) {
            throw SigningError(.policyDenied, "path \(rawPath) is outside this worker's signing policy (allowed_path_prefixes: \(allowedPathPrefixes.joined(separator: ", ")))")
        }
        if let resource = plan.request.resource {
            try checkResourceScope(resource)
        }
        // The same limit capped the plan's expiry rounding, so the two cannot disagree.
        if let rule = lifetimeLimits(for: plan.request, maximum: nil).rule, lifetime > rule.seconds {
            let lives = "this one would live \(Durations.describe(lifetime))"
            if let resource = rule.reachedThrough {
                throw SigningError(.policyDenied, "resource \(resource) reaches links under \(rule.prefix), which may live at most \(Durations.describe(rule.seconds)) (prefix_max_lifetimes); \(lives)")
            }
            throw SigningError(.policyDenied, "links under \(rule.prefix) may live at most \(Durations.describe(rule.seconds)) (prefix_max_lifetimes); \(lives)")
        }
    }

    /// Seconds from `now` to `expiresAt`, saturated instead of trapping.
    static func lifetime(_ expiresAt: Int64, now: Int64) -> Int64 { expiresAt.subtractingSaturating(now) }

    /// The prefix lifetime rule for a path (the longest matching prefix), if any.
    public func lifetimeLimit(forPath path: String) -> (prefix: String, seconds: Int64)? {
        let path = URLRules.normalizedForRules(path)
        return prefixLifetimes.filter { path.hasPrefix($0.prefix) }.max { $0.prefix.count < $1.prefix.count }
    }

    /// Every lifetime limit a request can reach, and the strictest of them.
    public struct LifetimeLimits: Sendable, Equatable {
        /// A `prefix_max_lifetimes` rule, and the resource that reaches it (nil: the URL's own rule).
        public struct Rule: Sendable, Equatable {
            public let prefix: String
            public let seconds: Int64
            public let reachedThrough: String?

            public init(prefix: String, seconds: Int64, reachedThrough: String?) {
                self.prefix = prefix
                self.seconds = seconds
                self.reachedThrough = reachedThrough
            }
        }
        /// The signer's maximum lifetime (`max_lifetime`), if any.
        public let maximum: Int64?
        /// The strictest prefix rule the URL or the resource's wildcard can reach, if any.
        public let rule: Rule?
        /// The longest any link for the request may live: what expiry rounding must never exceed.
        public var strictest: Int64? { [maximum, rule?.seconds].compactMap { $0 }.min() }
    }

    /// The one computation of how long a request's link may live. `SigningPlan` caps expiry rounding
    /// with it and `check` refuses with it, so rounding can never lift a job past a rule it reaches:
    /// the URL's own rule (longest matching prefix) and, for a wildcard resource, every rule under or
    /// above the resource's literal path (the strictest wins).
    public func lifetimeLimits(for request: SigningRequest, maximum: Int64?) -> LifetimeLimits {
        var candidates: [LifetimeLimits.Rule] = []
        if let own = lifetimeLimit(forPath: Self.hostAndPath(request.url).path) {
            candidates.append(.init(prefix: own.prefix, seconds: own.seconds, reachedThrough: nil))
        }
        if let resource = request.resource, let literalPath = Self.resourceScope(resource)?.path {
            for r in prefixLifetimes where r.prefix.hasPrefix(literalPath) || literalPath.hasPrefix(r.prefix) {
                candidates.append(.init(prefix: r.prefix, seconds: r.seconds, reachedThrough: resource))
            }
        }
        return LifetimeLimits(maximum: maximum, rule: candidates.min { $0.seconds < $1.seconds })
    }

    /// What a wildcard resource's text before its first `*` or `?` names: scheme, host and the
    /// (normalised) literal path. Nil for a resource without a wildcard (it equals the URL).
    static func resourceScope(_ resource: String) -> (scheme: String, host: String, path: String, wellFormed: Bool)? {
        guard let firstWildcard = resource.firstIndex(where: { $0 == "*" || $0 == "?" }) else { return nil }
        let literal = String(resource[..<firstWildcard])
        let schemeEnd = literal.firstRange(of: "://")
        let hostAndPath = schemeEnd.map { String(literal[$0.upperBound...]) } ?? ""
        let slash = hostAndPath.firstIndex(of: "/")
        let host = slash.map { String(hostAndPath[..<$0]) } ?? ""
        let path = slash.map { String(hostAndPath[$0...]) } ?? ""
        let scheme = schemeEnd.map { String(literal[..<$0.lowerBound]) } ?? ""
        let wellFormed = (scheme == "http" || scheme == "https") && slash != nil && !host.isEmpty
        return (scheme, host, URLRules.normalizedForRules(path), wellFormed)
    }

    /// A wildcard resource opens every URL it matches, so its reach is what the rules must bound,
    /// not just the job's own URL. With any host, path or lifetime rule set, `any` counts as
    /// `within-prefix`: otherwise `"resource": "*"` on an allowed URL would open everything.
    private func checkResourceScope(_ resource: String) throws(SigningError) {
        guard let scope = Self.resourceScope(resource) else { return }  // then resource == url
        let scoped = !allowedHosts.isEmpty || hasPathRules
        let mode = wildcards == .any && scoped ? .withinPrefix : wildcards
        switch mode {
        case .any: return
        case .none:
            throw SigningError(.policyDenied, "resource \(resource) uses wildcards, which this worker's signing policy forbids (resource_wildcards = none)")
        case .withinPrefix:
            let hostOK = allowedHosts.isEmpty || allowedHosts.contains(scope.host.lowercased())
            let prefixOK = allowedPathPrefixes.isEmpty || allowedPathPrefixes.contains { scope.path.hasPrefix($0) }
            guard scope.wellFormed, hostOK, prefixOK else {
                let what = allowedPathPrefixes.isEmpty ? "the scheme, an allowed host and a path" : "the scheme, an allowed host and an allowed path prefix (\(allowedPathPrefixes.joined(separator: ", ")))"
                throw SigningError(.policyDenied, "resource \(resource) is wider than this worker's signing policy allows: the text before the first wildcard must name \(what) (resource_wildcards = \(wildcards.rawValue))")
            }
        }
    }

    /// Host (with port) and path of an already validated absolute URL.
    static func hostAndPath(_ url: String) -> (host: String, path: String) {
        guard let scheme = url.firstRange(of: "://") else { return ("", "") }
        let rest = url[scheme.upperBound...]
        let hostEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let afterHost = rest[hostEnd...]
        let path = afterHost.prefix { $0 != "?" }
        return (String(rest[..<hostEnd]), path.isEmpty ? "/" : String(path))
    }

    // MARK: Parsing the worker's settings

    /// `a.example.com, b.example.com:8443`
    public static func parseList(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmed() }.filter { !$0.isEmpty }
    }

    /// `/invoices/=30d, /media/=1h`; nil if malformed.
    public static func parseLifetimes(_ text: String) -> [(prefix: String, seconds: Int64)]? {
        var out: [(prefix: String, seconds: Int64)] = []
        for item in parseList(text) {
            guard let eq = item.lastIndex(of: "="), let seconds = Durations.parse(String(item[item.index(after: eq)...])), seconds > 0 else { return nil }
            let prefix = item[..<eq].trimmed()
            guard prefix.hasPrefix("/") else { return nil }
            out.append((prefix, seconds))
        }
        return out
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (Core does not use Foundation).
    fileprivate func trimmed() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
