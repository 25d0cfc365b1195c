import CFSignCore
import Testing

/// A producer trusts only a reply that answers what it asked (reply injection, SECURITY.md).
@Suite("Reply check: a reply must match its request")
struct ReplyCheckTests {
    let now: Int64 = 1_800_000_000
    let other = "https://d111111abcdef8.cloudfront.net/media/secret.mp4"

    func request(_ url: String = objectURL, expiry: Expiry = .after(seconds: 600), resource: String? = nil,
                 output: OutputKind = .url, keyID: String? = nil) throws -> SigningRequest {
        try SigningRequest(url: url, expiry: expiry, resource: resource, output: output, keyID: keyID)
    }

    /// A signed URL as a worker assembles it for `request` (the signature is not checked here).
    func signed(_ request: SigningRequest, expiresAt: Int64, keyID: String = "K1") -> String {
        let plan = try! SigningPlan(request, now: now, limits: SigningLimits(maximumLifetime: nil))
        let policy = Policy(kind: plan.policy.kind, resource: plan.policy.resource, expiresAt: expiresAt,
                            startsAt: plan.policy.startsAt, ip: plan.policy.ip)
        let fixed = SigningPlanShim(plan: plan, policy: policy)
        return fixed.url(keyID: keyID)
    }

    func mismatch(_ url: String?, cookies: [(name: String, value: String)]? = nil, expiresAt: Int64, keyID: String = "K1",
                  for request: SigningRequest, rounding: Int64 = 0) -> String? {
        ReplyCheck.mismatch(url: url, cookies: cookies, expiresAt: expiresAt, keyID: keyID, request: request,
                            askedAt: now, now: now + 1, rounding: rounding)
    }

    @Test func aReplyForTheAskedURLAndLifetimeMatches() throws {
        let r = try request()
        #expect(mismatch(signed(r, expiresAt: now + 600), expiresAt: now + 600, for: r) == nil)
    }

    @Test func aReplyForAnotherObjectIsRefused() throws {
        let r = try request()
        let injected = signed(try request(other), expiresAt: now + 600)
        #expect(mismatch(injected, expiresAt: now + 600, for: r)?.contains("not for") == true)
    }

    @Test func aReplyWithExtraQueryParametersIsRefused() throws {
        let r = try request()
        let injected = signed(try request(objectURL + "?x=1"), expiresAt: now + 600)
        #expect(mismatch(injected, expiresAt: now + 600, for: r) != nil)
    }

    @Test func aLongerLifetimeThanAskedIsRefusedBeyondSkewAndRounding() throws {
        let r = try request()
        let late = now + 600 + ReplyCheck.clockSkewTolerance + 10
        #expect(mismatch(signed(r, expiresAt: late), expiresAt: late, for: r)?.contains("outside") == true)
        #expect(mismatch(signed(r, expiresAt: late), expiresAt: late, for: r, rounding: 3600) == nil)
    }

    @Test func aFixedExpiryMustBeExactlyTheAskedOne() throws {
        let r = try request(expiry: .at(now + 7200))
        #expect(mismatch(signed(r, expiresAt: now + 7200), expiresAt: now + 7200, for: r) == nil)
        #expect(mismatch(signed(r, expiresAt: now + 7201), expiresAt: now + 7201, for: r) != nil)
    }

    @Test func aWiderResourceThanAskedIsRefused() throws {
        let r = try request(resource: "https://d111111abcdef8.cloudfront.net/invoices/*")
        let wider = signed(try request(resource: "https://d111111abcdef8.cloudfront.net/*"), expiresAt: now + 600)
        #expect(mismatch(wider, expiresAt: now + 600, for: r)?.contains("resource") == true)
        #expect(mismatch(signed(r, expiresAt: now + 600), expiresAt: now + 600, for: r) == nil)
    }

    @Test func aCannedReplyToACustomRequestIsRefused() throws {
        let r = try request(resource: objectURL)
        let canned = signed(try request(), expiresAt: now + 600)
        #expect(mismatch(canned, expiresAt: now + 600, for: r)?.contains("policy") == true)
    }

    @Test func theReplyKeyMustBeTheLinksAndTheAskedOne() throws {
        let r = try request(keyID: "K2")
        let link = signed(r, expiresAt: now + 600, keyID: "K1")
        #expect(mismatch(link, expiresAt: now + 600, keyID: "K2", for: r)?.contains("Key-Pair-Id") == true)
        #expect(mismatch(link, expiresAt: now + 600, keyID: "K1", for: r)?.contains("asked for K2") == true)
    }

    @Test func cookiesAreCheckedLikeURLs() throws {
        let r = try request(resource: "https://d111111abcdef8.cloudfront.net/invoices/*", output: .cookies)
        let policy = Policy(kind: .custom, resource: "https://d111111abcdef8.cloudfront.net/*", expiresAt: now + 600)
        let cookies = [("CloudFront-Policy", CloudFrontBase64.encode(policy.bytes)), ("CloudFront-Signature", "QUFB"), ("CloudFront-Key-Pair-Id", "K1")]
        #expect(mismatch(nil, cookies: cookies.map { (name: $0.0, value: $0.1) }, expiresAt: now + 600, for: r)?.contains("resource") == true)
        #expect(mismatch(objectURL, expiresAt: now + 600, for: r)?.contains("cookies") == true)
    }

    @Test func extremeNumbersNeverTrap() throws {
        let r = try request(expiry: .after(seconds: .max))
        #expect(mismatch(signed(try request(), expiresAt: .min), expiresAt: .min, for: r) != nil)
        let at = try request(expiry: .at(.max))
        #expect(mismatch(signed(try request(), expiresAt: .max), expiresAt: .max, for: at) == nil, "exactly what was asked")
        #expect(mismatch(signed(try request(), expiresAt: .min), expiresAt: .min, for: at) != nil)
    }
}

/// Assembles a signed URL from a plan with a chosen expiry (a stand-in for a worker's output; the
/// check never verifies signatures, so a fixed one does).
private struct SigningPlanShim {
    let plan: SigningPlan
    let policy: Policy

    func url(keyID: String) -> String {
        let url = plan.request.url
        var s = url + (url.contains("?") ? "&" : "?")
        switch policy.kind {
        case .canned: s += "Expires=\(policy.expiresAt)"
        case .custom: s += "Policy=" + CloudFrontBase64.encode(policy.bytes)
        }
        return s + "&Signature=QUFB&Key-Pair-Id=" + keyID
    }
}
