import Testing
import CFSignCore

/// The worker's signing policy (`allowed_hosts`, `allowed_path_prefixes`, `prefix_max_lifetimes`,
/// `resource_wildcards`): what a job outside it is told, and what it still lets through.
@Suite("SigningRules")
struct SigningRulesTests {
    static let host = "https://d111111abcdef8.cloudfront.net"
    let now: Int64 = 1_767_000_000

    /// The error a job gets under `rules` (nil: signed), through the plan as the worker builds it.
    func error(_ path: String, lifetime: Int64 = 600, resource: String? = nil, rules: SigningRules) -> SigningError? {
        signingError {
            let request = try SigningRequest(url: Self.host + path, expiry: .after(seconds: lifetime), resource: resource)
            try rules.check(try SigningPlan(request, now: now, limits: SigningLimits(maximumLifetime: 365 * 86400), rules: rules), now: now)
        }
    }

    @Test("no rule set signs any host, path and wildcard")
    func emptyRulesSignEverything() {
        let rules = SigningRules()
        #expect(rules.isEmpty)
        #expect(error("/anything/at/all", resource: "*", rules: rules) == nil)
    }

    @Test("a host outside allowed_hosts is policy_denied, and the message lists the allowed hosts")
    func hostOutsideAllowed() throws {
        let rules = SigningRules(allowedHosts: ["media.example.com"])
        let e = try #require(error("/a.pdf", rules: rules))
        #expect(e.code == .policyDenied)
        #expect(e.mentions("host d111111abcdef8.cloudfront.net", "allowed_hosts: media.example.com"))
    }

    @Test("allowed_hosts compares without case")
    func hostsIgnoreCase() {
        #expect(error("/a.pdf", rules: SigningRules(allowedHosts: ["D111111ABCDEF8.cloudfront.NET"])) == nil)
    }

    @Test("a path outside every allowed prefix is policy_denied and named as written")
    func pathOutsidePrefixes() throws {
        let rules = SigningRules(allowedPathPrefixes: ["/invoices/", "/media/"])
        #expect(error("/invoices/42.pdf", rules: rules) == nil)
        let e = try #require(error("/private/42.pdf", rules: rules))
        #expect(e.code == .policyDenied)
        #expect(e.mentions("path /private/42.pdf", "allowed_path_prefixes: /invoices/, /media/"))
    }

    @Test("with path rules, an encoded slash in the path is policy_denied")
    func encodedSlashWithPathRules() throws {
        let e = try #require(error("/invoices%2F..%2Fsecret.pdf", rules: SigningRules(allowedPathPrefixes: ["/invoices/"])))
        #expect(e.code == .policyDenied)
        #expect(e.mentions("encoded slash"))
    }

    @Test("without path rules, an encoded slash is signed as written")
    func encodedSlashWithoutPathRules() {
        #expect(error("/a%2Fb.pdf", rules: SigningRules(allowedHosts: ["d111111abcdef8.cloudfront.net"])) == nil)
    }

    @Test("resource_wildcards = none refuses any wildcard resource")
    func wildcardsNone() throws {
        let e = try #require(error("/media/a.mp4", resource: Self.host + "/media/*", rules: SigningRules(wildcards: .none)))
        #expect(e.code == .policyDenied)
        #expect(e.mentions("resource_wildcards = none"))
    }

    @Test("within-prefix signs a wildcard that stays inside an allowed prefix")
    func withinPrefixInside() {
        let rules = SigningRules(allowedPathPrefixes: ["/media/"], wildcards: .withinPrefix)
        #expect(error("/media/season1/a.mp4", resource: Self.host + "/media/season1/*", rules: rules) == nil)
    }

    @Test("within-prefix refuses a wildcard wider than the prefix", arguments: ["*", "https://*", "/me*", "/*"])
    func withinPrefixWider(resourceTail: String) throws {
        let rules = SigningRules(allowedPathPrefixes: ["/media/"], wildcards: .withinPrefix)
        let resource = resourceTail.hasPrefix("/") ? Self.host + resourceTail : resourceTail
        let e = try #require(error("/media/a.mp4", resource: resource, rules: rules), "resource \(resource)")
        #expect(e.code == .policyDenied)
        #expect(e.mentions("wider than this worker's signing policy allows"))
    }

    @Test("with any host or path rule set, wildcards = any is judged as within-prefix")
    func anyBecomesWithinPrefixUnderRules() throws {
        let rules = SigningRules(allowedPathPrefixes: ["/media/"])
        let e = try #require(error("/media/a.mp4", resource: "*", rules: rules))
        #expect(e.code == .policyDenied)
    }

    @Test("a prefix lifetime caps links under it and the message names prefix and both lifetimes")
    func prefixLifetimeCaps() throws {
        let rules = SigningRules(prefixLifetimes: [(prefix: "/media/", seconds: 3600)])
        #expect(error("/media/a.mp4", lifetime: 3600, rules: rules) == nil)
        let e = try #require(error("/media/a.mp4", lifetime: 3601, rules: rules))
        #expect(e.code == .policyDenied)
        #expect(e.mentions("links under /media/ may live at most", "prefix_max_lifetimes"))
        #expect(error("/other/a.mp4", lifetime: 86400, rules: rules) == nil)
    }

    @Test("the longest matching prefix lifetime wins")
    func longestPrefixWins() throws {
        let rules = SigningRules(prefixLifetimes: [(prefix: "/media/", seconds: 86400), (prefix: "/media/previews/", seconds: 60)])
        #expect(rules.lifetimeLimit(forPath: "/media/previews/a.jpg")?.seconds == 60)
        #expect(rules.lifetimeLimit(forPath: "/media/full/a.mp4")?.seconds == 86400)
        #expect(error("/media/previews/a.jpg", lifetime: 61, rules: rules)?.code == .policyDenied)
    }

    @Test("a wildcard resource is held to the strictest lifetime rule it reaches")
    func wildcardReachesStricterRule() throws {
        let rules = SigningRules(prefixLifetimes: [(prefix: "/media/previews/", seconds: 60)])
        let e = try #require(error("/media/a.mp4", lifetime: 3600, resource: Self.host + "/media/*", rules: rules))
        #expect(e.code == .policyDenied)
        #expect(e.mentions("resource \(Self.host)/media/*", "reaches links under /media/previews/"))
    }

    @Test("lifetimeLimits reports the strictest of max_lifetime and the rules")
    func strictestLimit() throws {
        let rules = SigningRules(prefixLifetimes: [(prefix: "/media/", seconds: 3600)])
        let request = try SigningRequest(url: Self.host + "/media/a.mp4", expiry: .after(seconds: 60))
        #expect(rules.lifetimeLimits(for: request, maximum: 86400).strictest == 3600)
        #expect(rules.lifetimeLimits(for: request, maximum: 600).strictest == 600)
        #expect(SigningRules().lifetimeLimits(for: request, maximum: nil).strictest == nil)
    }

    @Test("settings lists are split on commas, trimmed, and empty items dropped")
    func parseList() {
        #expect(SigningRules.parseList(" a.example.com ,b.example.com:8443,, ") == ["a.example.com", "b.example.com:8443"])
    }

    @Test("prefix lifetimes parse prefix=duration pairs")
    func parseLifetimes() throws {
        let parsed = try #require(SigningRules.parseLifetimes("/invoices/=30d, /media/=1h"))
        #expect(parsed.map(\.prefix) == ["/invoices/", "/media/"])
        #expect(parsed.map(\.seconds) == [30 * 86400, 3600])
    }

    @Test("a malformed prefix lifetime is rejected", arguments: ["media/=1h", "/media/", "/media/=0", "/media/=soon", "/media/=-5s"])
    func parseLifetimesMalformed(text: String) {
        #expect(SigningRules.parseLifetimes(text) == nil, "\(text)")
    }

    @Test("the start-up summary names every rule")
    func summary() {
        #expect(SigningRules().summary.hasPrefix("none"))
        let rules = SigningRules(allowedHosts: ["a.example.com"], allowedPathPrefixes: ["/media/"], wildcards: .none)
        #expect(rules.summary == "hosts a.example.com; paths /media/; wildcards none")
    }
}
