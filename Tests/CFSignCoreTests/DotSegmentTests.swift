import Testing
import CFSignCore

/// Attack 3 (issue 13): the signing policy judged the raw path, so `/invoices/../secret.pdf` was
/// signed under `allowed_path_prefixes = /invoices/`. Contract: "URL rule: no dot segments".
@Suite("Dot segments and encoded slashes")
struct DotSegmentTests {
    static let host = "https://d111111abcdef8.cloudfront.net"
    let now: Int64 = 1_767_000_000
    let invoicesOnly = SigningRules(allowedPathPrefixes: ["/invoices/"])

    /// The code a request gets from the request checks, the plan and the rules; "ok" if signed.
    func outcome(url: String, resource: String? = nil, rules: SigningRules = SigningRules()) -> String {
        do {
            let request = try SigningRequest(url: url, expiry: .after(seconds: 600), resource: resource)
            let plan = try SigningPlan(request, now: now, limits: SigningLimits(maximumLifetime: 86400), rules: rules)
            try rules.check(plan, now: now)
            return "ok"
        } catch {
            return error.code.rawValue
        }
    }

    func error(url: String, resource: String? = nil, rules: SigningRules = SigningRules()) -> SigningError? {
        signingError {
            let request = try SigningRequest(url: url, expiry: .after(seconds: 600), resource: resource)
            try rules.check(try SigningPlan(request, now: now, limits: SigningLimits(maximumLifetime: 86400), rules: rules), now: now)
        }
    }

    @Test("a url whose path holds a dot segment in any encoding is invalid_url", arguments: [
        "/a/./b", "/a/../b", "/a/%2e%2E/b", "/a/.%2e", "/a/..", "/..", "/.", "/a/%2E", "/a/%2e./b", "/a/..;jsessionid=1/b",
        "/a/..?q=1",
    ])
    func urlDotSegment(path: String) {
        #expect(outcome(url: Self.host + path) == "invalid_url", "url path \(path)")
    }

    @Test("names that only look like dot segments are signed", arguments: [
        "/a/.../b", "/a/.b", "/a/b.", "/a/..b", "/a/%2e%2e%2e", "/a/%2ex", "/a?x=/../y", "/a/%2", "/", "/a/.well-known/x",
    ])
    func notDotSegments(path: String) {
        #expect(outcome(url: Self.host + path) == "ok", "url path \(path)")
    }

    @Test("the invalid_url message names the dot segment as written")
    func messageNamesSegment() throws {
        let e = try #require(error(url: Self.host + "/invoices/%2e%2E/secret.pdf"))
        #expect(e.code == .invalidURL)
        #expect(e.mentions("dot segment \"%2e%2E\"", "/invoices/%2e%2E/secret.pdf"))
    }

    @Test("a resource whose path holds a dot segment is invalid_url", arguments: [
        "/invoices/../*", "/invoices/%2e%2e/*", "/*/../x", "/invoices/./a*",
    ])
    func resourceDotSegment(resourcePath: String) throws {
        // The URL the resource must match is clean; only the resource carries the segment.
        let e = try #require(error(url: Self.host + "/invoices/a/x", resource: Self.host + resourcePath))
        #expect(e.code == .invalidURL, "resource path \(resourcePath)")
        #expect(e.mentions("resource", "dot segment"))
    }

    @Test("a resource whose text before the wildcard ends in a dot segment is invalid_url", arguments: [
        "/invoices/..*", "/invoices/.*", "/invoices/%2e%2e*", "/invoices/.?",
    ])
    func literalEndsInDots(resourcePath: String) {
        #expect(outcome(url: Self.host + "/invoices/..x", resource: Self.host + resourcePath) == "invalid_url", "resource path \(resourcePath)")
    }

    @Test("the issue's traversals are refused under allowed_path_prefixes = /invoices/, as url", arguments: [
        ("/invoices/../secret.pdf", "invalid_url"), ("/invoices/%2e%2e/secret.pdf", "invalid_url"),
        ("/invoices/..%2fsecret.pdf", "policy_denied"), ("/invoices/a/../../x", "invalid_url"),
        ("/invoices/../media/v.mp4", "invalid_url"),
    ])
    func issueTraversalsAsURL(path: String, code: String) {
        #expect(outcome(url: Self.host + path, rules: invoicesOnly) == code, "url path \(path)")
    }

    @Test("the issue's traversals are refused under allowed_path_prefixes = /invoices/, via resource", arguments: [
        "/invoices/../secret.pdf", "/invoices/%2e%2e/secret.pdf", "/invoices/..%2fsecret.pdf", "/invoices/a/../../x",
        "/invoices/../media/v.mp4",
    ])
    func issueTraversalsViaResource(path: String) {
        // A resource that matches the traversal URL and names the allowed prefix before its wildcard.
        let code = outcome(url: Self.host + path, resource: Self.host + "/invoices/*", rules: invoicesOnly)
        #expect(code != "ok", "url path \(path) via resource /invoices/*")
        let viaLiteral = outcome(url: Self.host + path, resource: Self.host + path + "*", rules: invoicesOnly)
        #expect(viaLiteral != "ok", "resource \(path)*")
    }

    @Test("an encoded slash is policy_denied when path rules are set", arguments: ["%2f", "%2F", "%5c", "%5C"])
    func encodedSlashUnderPathRules(slash: String) throws {
        let url = Self.host + "/invoices/a\(slash)b.pdf"
        let e = try #require(error(url: url, rules: invoicesOnly))
        #expect(e.code == .policyDenied)
        #expect(e.mentions("encoded slash \(slash)", "allowed_path_prefixes"))
        let lifetimes = SigningRules(prefixLifetimes: [("/media/", 3600)])
        #expect(outcome(url: url, rules: lifetimes) == "policy_denied")
    }

    @Test("an encoded slash in a resource is policy_denied when path rules are set")
    func encodedSlashInResource() {
        #expect(outcome(url: Self.host + "/invoices/a%2fb", resource: Self.host + "/invoices/a%2f*", rules: invoicesOnly) == "policy_denied")
    }

    @Test("an encoded slash is signed when no path rule is set")
    func encodedSlashWithoutPathRules() {
        #expect(outcome(url: Self.host + "/a%2fb.pdf") == "ok")
        #expect(outcome(url: Self.host + "/a%2fb.pdf", rules: SigningRules(allowedHosts: ["d111111abcdef8.cloudfront.net"])) == "ok")
    }

    @Test("path rules judge percent-encoded unreserved characters decoded, as the origin reads them")
    func unreservedEscapesDecoded() {
        // `/%6Dedia/` is `/media/` to every origin: its shorter lifetime applies.
        let rules = SigningRules(prefixLifetimes: [("/media/", 300)])
        #expect(outcome(url: Self.host + "/%6Dedia/v.mp4", rules: rules) == "policy_denied")
        #expect(outcome(url: Self.host + "/%69nvoices/1.pdf", rules: invoicesOnly) == "ok")
    }

    @Test("the edge refuses a request whose path holds a dot segment, even when the resource's wildcard matches it")
    func edgeRefusesDotSegments() throws {
        let policy = Policy(kind: .custom, resource: Self.host + "/invoices/*", expiresAt: now + 600)
        let bytes = policy.bytes
        let query = "Policy=\(CloudFrontBase64.encode(bytes))&Signature=AAAA&Key-Pair-Id=K1"
        for path in ["/invoices/../secret.pdf", "/invoices/%2e%2e/secret.pdf", "/invoices/a/./b"] {
            let request = try SignedRequest.parse(signedURL: Self.host + path + "?" + query)
            #expect(throws: Refusal.self, "edge path \(path)") { try request.checkConditions(now: now, viewerIP: nil) }
            do { try request.checkConditions(now: now, viewerIP: nil) } catch { #expect(error.reason == .pathTraversal) }
        }
        let clean = try SignedRequest.parse(signedURL: Self.host + "/invoices/a.pdf?" + query)
        #expect(throws: Never.self) { try clean.checkConditions(now: now, viewerIP: nil) }
    }
}
