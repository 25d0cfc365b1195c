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

    /// Checks a planned link against the rules: its URL, and the reach of its `resource`.
    public func check(_ plan: SigningPlan, now: Int64) throws(SigningError) {
        if isEmpty { return }
        let lifetime = plan.expiresAt - now
        let (host, path) = Self.hostAndPath(plan.request.url)
        if !allowedHosts.isEmpty, !allowedHosts.contains(host.lowercased()) {
            throw SigningError(.policyDenied, "host \(host) is not allowed by this worker's signing policy (allowed_hosts: \(allowedHosts.joined(separator: ", ")))")
        }
        if !allowedPathPrefixes.isEmpty, !allowedPathPrefixes.contains(where: { path.hasPrefix($0) }) {
            throw SigningError(.policyDenied, "path \(path) is outside this worker's signing policy (allowed_path_prefixes: \(allowedPathPrefixes.joined(separator: ", ")))")
        }
        if let limit = lifetimeLimit(forPath: path), lifetime > limit.seconds {
            throw SigningError(.policyDenied, "links under \(limit.prefix) may live at most \(Durations.describe(limit.seconds)) (prefix_max_lifetimes); this one would live \(Durations.describe(lifetime))")
        }
        if let resource = plan.request.resource {
            try checkResource(resource, lifetime: lifetime)
        }
    }

    /// The prefix lifetime rule for a path (the longest matching prefix), if any.
    public func lifetimeLimit(forPath path: String) -> (prefix: String, seconds: Int64)? {
        prefixLifetimes.filter { path.hasPrefix($0.prefix) }.max { $0.prefix.count < $1.prefix.count }
    }

    /// The longest lifetime the rules allow for a request's URL, for capping expiry rounding.
    public func lifetimeCap(for request: SigningRequest) -> Int64? {
        lifetimeLimit(forPath: Self.hostAndPath(request.url).path)?.seconds
    }

    /// A wildcard resource opens every URL it matches, so its reach is what the rules must bound,
    /// not just the job's own URL. With any host, path or lifetime rule set, `any` counts as
    /// `within-prefix`: otherwise `"resource": "*"` on an allowed URL would open everything.
    private func checkResource(_ resource: String, lifetime: Int64) throws(SigningError) {
        guard let firstWildcard = resource.firstIndex(where: { $0 == "*" || $0 == "?" }) else { return }  // then resource == url
        let scoped = !allowedHosts.isEmpty || !allowedPathPrefixes.isEmpty || !prefixLifetimes.isEmpty
        let mode = wildcards == .any && scoped ? .withinPrefix : wildcards
        switch mode {
        case .any: return
        case .none:
            throw SigningError(.policyDenied, "resource \(resource) uses wildcards, which this worker's signing policy forbids (resource_wildcards = none)")
        case .withinPrefix:
            let literal = String(resource[..<firstWildcard])
            let schemeEnd = literal.firstRange(of: "://")
            let hostAndPath = schemeEnd.map { String(literal[$0.upperBound...]) } ?? ""
            let slash = hostAndPath.firstIndex(of: "/")
            let literalHost = slash.map { String(hostAndPath[..<$0]) } ?? ""
            let literalPath = slash.map { String(hostAndPath[$0...]) } ?? ""
            let scheme = schemeEnd.map { String(literal[..<$0.lowerBound]) } ?? ""
            let wellFormed = (scheme == "http" || scheme == "https") && slash != nil && !literalHost.isEmpty
            let hostOK = allowedHosts.isEmpty || allowedHosts.contains(literalHost.lowercased())
            let prefixOK = allowedPathPrefixes.isEmpty || allowedPathPrefixes.contains { literalPath.hasPrefix($0) }
            guard wellFormed, hostOK, prefixOK else {
                let scope = allowedPathPrefixes.isEmpty ? "the scheme, an allowed host and a path" : "the scheme, an allowed host and an allowed path prefix (\(allowedPathPrefixes.joined(separator: ", ")))"
                throw SigningError(.policyDenied, "resource \(resource) is wider than this worker's signing policy allows: the text before the first wildcard must name \(scope) (resource_wildcards = \(wildcards.rawValue))")
            }
            // Every prefix rule the resource can reach applies; the strictest wins.
            let reachable = prefixLifetimes.filter { $0.prefix.hasPrefix(literalPath) || literalPath.hasPrefix($0.prefix) }
            if let strictest = reachable.min(by: { $0.seconds < $1.seconds }), lifetime > strictest.seconds {
                throw SigningError(.policyDenied, "resource \(resource) reaches links under \(strictest.prefix), which may live at most \(Durations.describe(strictest.seconds)) (prefix_max_lifetimes); this one would live \(Durations.describe(lifetime))")
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
