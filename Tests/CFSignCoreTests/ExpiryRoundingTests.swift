import Testing
import CFSignCore

@Suite("Expiry rounding (cfsign extension: round_expiry, expiry_rounding)")
struct ExpiryRoundingTests {
    let now: Int64 = 1_767_000_123

    func plan(_ expiry: Expiry, round: Int64? = nil, workerDefault: Int64 = 0, maximum: Int64? = nil) throws -> SigningPlan {
        var limits = SigningLimits(maximumLifetime: maximum)
        limits.expiryRounding = workerDefault
        let request = try SigningRequest(url: objectURL, expiry: expiry, roundExpiry: round)
        return try SigningPlan(request, now: now, limits: limits)
    }

    @Test("round_expiry rounds the expiry up to the next multiple")
    func roundsUp() throws {
        let p = try plan(.after(seconds: 86400), round: 3600)
        #expect(p.expiresAt % 3600 == 0)
        #expect(p.expiresAt >= now + 86400 && p.expiresAt < now + 86400 + 3600)
    }

    @Test("two requests a minute apart get the same expiry, so the same policy bytes")
    func sameExpiryWithinGranularity() throws {
        var limits = SigningLimits(maximumLifetime: nil)
        limits.expiryRounding = 3600
        let request = try SigningRequest(url: objectURL, expiry: .after(seconds: 600))
        let base = (now / 3600) * 3600 + 10
        let a = try SigningPlan(request, now: base, limits: limits)
        let b = try SigningPlan(request, now: base + 60, limits: limits)
        #expect(a.policy.bytes == b.policy.bytes)
    }

    @Test("the worker's expiry_rounding applies to expires_in jobs only")
    func workerDefaultOnlyForExpiresIn() throws {
        #expect(try plan(.after(seconds: 100), workerDefault: 3600).expiresAt % 3600 == 0)
        #expect(try plan(.at(now + 100), workerDefault: 3600).expiresAt == now + 100)
    }

    @Test("a job's round_expiry 0 turns the worker's rounding off")
    func jobOverridesWorker() throws {
        #expect(try plan(.after(seconds: 100), round: 0, workerDefault: 3600).expiresAt == now + 100)
    }

    @Test("rounding never makes a link outlive the maximum lifetime")
    func neverPastMaximum() throws {
        let p = try plan(.after(seconds: 3000), round: 3600, maximum: 3000)
        #expect(p.expiresAt == now + 3000)
    }

    @Test("round_expiry out of range is invalid_expiry")
    func outOfRange() {
        let e = signingError { _ = try SigningRequest(url: objectURL, expiry: .after(seconds: 60), roundExpiry: -5) }
        #expect(e?.code == .invalidExpiry)
    }

    /// Attack 6 (issue 13): the rounding cap looked only at the URL's prefix rule, so a wildcard
    /// resource reaching a stricter rule was rounded past it and refused, depending on the clock.
    @Test("rounding never lifts a job past a prefix rule its wildcard resource reaches, at any clock", arguments: Array(stride(from: Int64(0), to: 600, by: 37)))
    func neverPastReachedPrefixRule(offset: Int64) throws {
        let host = "https://d111111abcdef8.cloudfront.net"
        let rules = SigningRules(prefixLifetimes: [("/media/", 3600)])
        let request = try SigningRequest(url: host + "/m/x.mp4", expiry: .after(seconds: 3500), resource: host + "/m*", roundExpiry: 600)
        let t = now + offset
        let p = try SigningPlan(request, now: t, limits: SigningLimits(maximumLifetime: 86400), rules: rules)
        #expect(p.expiresAt - t <= 3600, "rounded to \(p.expiresAt - t)s at clock +\(offset)")
        #expect(throws: Never.self) { try rules.check(p, now: t) }
    }

    @Test("the rounding cap and the policy check use the same reachable limit")
    func oneLimit() throws {
        let host = "https://d111111abcdef8.cloudfront.net"
        let rules = SigningRules(prefixLifetimes: [("/media/", 3600), ("/media/short/", 60), ("/m/", 7200)])
        let request = try SigningRequest(url: host + "/m/x", expiry: .after(seconds: 30), resource: host + "/m*")
        let limits = rules.lifetimeLimits(for: request, maximum: 86400)
        #expect(limits.rule == SigningRules.LifetimeLimits.Rule(prefix: "/media/short/", seconds: 60, reachedThrough: host + "/m*"))
        #expect(limits.strictest == 60)
        #expect(rules.lifetimeLimits(for: request, maximum: 10).strictest == 10)
    }
}
