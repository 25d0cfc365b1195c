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
}
