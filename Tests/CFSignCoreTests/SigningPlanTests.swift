import Testing
import CFSignCore

@Suite("SigningPlan")
struct SigningPlanTests {
    let now: Int64 = 1_767_000_000
    let unlimited = SigningLimits(maximumLifetime: nil)

    func request(_ expiry: Expiry, startsAt: Int64? = nil, ip: String? = nil, resource: String? = nil,
                 hash: HashAlgorithm? = nil) throws -> SigningRequest {
        try SigningRequest(url: objectURL, expiry: expiry, startsAt: startsAt,
                           ip: try ip.map { (t) throws(SigningError) in try IPv4Range(parsing: t) },
                           resource: resource, hash: hash)
    }

    func planError(_ r: SigningRequest, limits: SigningLimits? = nil) -> SigningError? {
        signingError { _ = try SigningPlan(r, now: now, limits: limits ?? unlimited) }
    }

    @Test("expires_in is resolved against the signer's clock")
    func expiresInResolved() throws {
        let plan = try SigningPlan(request(.after(seconds: 3600)), now: now, limits: unlimited)
        #expect(plan.expiresAt == now + 3600)
        #expect(plan.policy.expiresAt == now + 3600)
    }

    @Test("expires_at is used as given")
    func expiresAtAsGiven() throws {
        #expect(try SigningPlan(request(.at(now + 1)), now: now, limits: unlimited).expiresAt == now + 1)
    }

    @Test("expires_at in the past or equal to now is refused with invalid_expiry", arguments: [-1, 0] as [Int64])
    func expiresAtNotFuture(delta: Int64) throws {
        let e = try #require(planError(request(.at(now + delta))))
        #expect(e.code == .invalidExpiry)
        #expect(e.mentions("expires_at \(now + delta)", "not in the future", "\(now)"))
    }

    @Test("starts_at at or after the expiry is refused with invalid_expiry", arguments: [0, 1, 1000] as [Int64])
    func startsAtNotBeforeExpiry(delta: Int64) throws {
        let e = try #require(planError(request(.at(now + 60), startsAt: now + 60 + delta)))
        #expect(e.code == .invalidExpiry)
        #expect(e.mentions("starts_at", "not before the expiry"))
    }

    @Test("starts_at just before the expiry, even in the past, is accepted")
    func startsAtBeforeExpiry() throws {
        #expect(try SigningPlan(request(.at(now + 60), startsAt: now + 59), now: now, limits: unlimited).policy.startsAt == now + 59)
        #expect(try SigningPlan(request(.after(seconds: 60), startsAt: 1), now: now, limits: unlimited).policy.startsAt == 1)
    }

    @Test("a lifetime over the maximum is refused with ttl_too_long", arguments: [
        Expiry.after(seconds: 3601), .at(1_767_003_601), .after(seconds: 365 * 86400),
    ])
    func overMaximum(expiry: Expiry) throws {
        let e = try #require(planError(request(expiry), limits: SigningLimits(maximumLifetime: 3600)))
        #expect(e.code == .ttlTooLong)
        #expect(e.mentions("at most 1h"))
    }

    @Test("a lifetime of exactly the maximum is allowed", arguments: [Expiry.after(seconds: 3600), .at(1_767_003_600)])
    func exactlyMaximum(expiry: Expiry) throws {
        let plan = try SigningPlan(request(expiry), now: now, limits: SigningLimits(maximumLifetime: 3600))
        #expect(plan.expiresAt == now + 3600)
    }

    @Test("the ttl_too_long message gives both lifetimes in readable units")
    func ttlMessage() throws {
        let e = try #require(planError(request(.after(seconds: 90_061)), limits: SigningLimits(maximumLifetime: 86400)))
        #expect(e.message == "the link would live 1d1h1m1s; this signer allows at most 1d")
    }

    @Test("an expiry after 9999-12-31T23:59:59Z is refused with ttl_too_long, even without a lifetime limit")
    func year9999Cap() throws {
        #expect(try SigningPlan(request(.at(SigningLimits.latestExpiry)), now: now, limits: unlimited).expiresAt == 253_402_300_799)
        let e = try #require(planError(request(.at(SigningLimits.latestExpiry + 1))))
        #expect(e.code == .ttlTooLong)
        #expect(e.mentions("9999"))
    }

    @Test("an expires_in that overflows the clock is refused with ttl_too_long, not a crash")
    func expiresInOverflow() throws {
        let e = try #require(planError(request(.after(seconds: .max))))
        #expect(e.code == .ttlTooLong)
        #expect(e.mentions("9999"))
    }

    @Test("the hash defaults to the signer's configured default, SHA1 unless set")
    func hashDefault() throws {
        #expect(SigningLimits(maximumLifetime: nil).defaultHash == .sha1)
        #expect(try SigningPlan(request(.after(seconds: 60)), now: now, limits: unlimited).hash == .sha1)
        let sha256 = SigningLimits(maximumLifetime: nil, defaultHash: .sha256)
        #expect(try SigningPlan(request(.after(seconds: 60)), now: now, limits: sha256).hash == .sha256)
        #expect(try SigningPlan(request(.after(seconds: 60), hash: .sha1), now: now, limits: sha256).hash == .sha1)
    }

    @Test("a digest this signer cannot use, asked for or defaulted, is refused with unsupported_hash", arguments: [nil, HashAlgorithm.sha1])
    func unsupportedDigest(asked: HashAlgorithm?) throws {
        let noSHA1 = SigningLimits(maximumLifetime: nil, defaultHash: .sha1, supportedHashes: [.sha256])
        let e = try #require(planError(request(.after(seconds: 60), hash: asked), limits: noSHA1))
        #expect(e.code == .unsupportedHash)
        #expect(e.mentions("SHA1", "available: SHA256"))
        let none = SigningLimits(maximumLifetime: nil, supportedHashes: [])
        #expect(try #require(planError(request(.after(seconds: 60), hash: asked), limits: none)).mentions("available: none"))
    }

    @Test("a request with only an expiry gets a canned policy over the url")
    func cannedPlan() throws {
        let plan = try SigningPlan(request(.at(now + 60)), now: now, limits: unlimited)
        #expect(plan.policy == Policy(kind: .canned, resource: objectURL, expiresAt: now + 60))
    }

    @Test("a request with a resource gets a custom policy over the resource")
    func customPlan() throws {
        let resource = "https://d111111abcdef8.cloudfront.net/*"
        let plan = try SigningPlan(request(.at(now + 60), ip: "192.0.2.7", resource: resource), now: now, limits: unlimited)
        #expect(plan.policy.kind == .custom)
        #expect(plan.policy.resource == resource)
        #expect(plan.policy.ip?.description == "192.0.2.7/32")
    }
}

@Suite("Policy bytes")
struct PolicyBytesTests {
    func text(_ p: Policy) -> String { String(decoding: p.bytes, as: UTF8.self) }

    @Test("a canned policy is the contract's exact bytes")
    func canned() {
        let p = Policy(kind: .canned, resource: objectURL, expiresAt: 1_767_225_600)
        #expect(text(p) == #"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/invoices/42.pdf","Condition":{"DateLessThan":{"AWS:EpochTime":1767225600}}}]}"#)
    }

    @Test("a custom policy writes its conditions in the order DateLessThan, IpAddress, DateGreaterThan")
    func customAllConditions() throws {
        let p = Policy(kind: .custom, resource: "https://d111111abcdef8.cloudfront.net/invoices/*", expiresAt: 1_767_225_600,
                       startsAt: 1_767_000_000, ip: try IPv4Range(parsing: "192.0.2.0/24"))
        #expect(text(p) == #"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/invoices/*","Condition":{"DateLessThan":{"AWS:EpochTime":1767225600},"IpAddress":{"AWS:SourceIp":"192.0.2.0/24"},"DateGreaterThan":{"AWS:EpochTime":1767000000}}}]}"#)
    }

    @Test("a bare IP address is written as /32")
    func bareIP() throws {
        let p = Policy(kind: .custom, resource: "http*://h.example/*", expiresAt: 2, ip: try IPv4Range(parsing: "203.0.113.9"))
        #expect(text(p) == #"{"Statement":[{"Resource":"http*://h.example/*","Condition":{"DateLessThan":{"AWS:EpochTime":2},"IpAddress":{"AWS:SourceIp":"203.0.113.9/32"}}}]}"#)
    }

    @Test("a custom policy with only starts_at has DateLessThan then DateGreaterThan")
    func startsOnly() {
        let p = Policy(kind: .custom, resource: "https://h/a", expiresAt: 20, startsAt: 10)
        #expect(text(p) == #"{"Statement":[{"Resource":"https://h/a","Condition":{"DateLessThan":{"AWS:EpochTime":20},"DateGreaterThan":{"AWS:EpochTime":10}}}]}"#)
    }

    @Test("policy bytes are valid JSON with '/' unescaped and no whitespace")
    func validJSON() throws {
        let p = Policy(kind: .custom, resource: "https://h/a?b=1&c=%20", expiresAt: 20, startsAt: 10, ip: try IPv4Range(parsing: "0.0.0.0/0"))
        let value = try JSONReader.parse(p.bytes)
        guard case .array(let statements)? = value[member: "Statement"], let s = statements.first else { Issue.record("shape"); return }
        #expect(s[member: "Resource"] == .string("https://h/a?b=1&c=%20"))
        #expect(!p.bytes.contains(UInt8(ascii: " ")) && !p.bytes.contains(UInt8(ascii: "\\")))
    }
}

@Suite("Wildcard matching")
struct WildcardTests {
    @Test("patterns match the whole URL as a string", arguments: [
        ("https://h/*", "https://h/a/b/c.pdf", true),
        ("https://h/*", "https://h/", true),
        ("https://h/*", "https://h", false),
        ("*", "", true),
        ("*", "anything/at?all", true),
        ("", "", true),
        ("", "a", false),
        ("https://h/*.pdf", "https://h/a/b.pdf?x=1", false),     // anchored at the end
        ("https://h/*.pdf*", "https://h/a/b.pdf?x=1", true),
        ("h/*", "https://h/a", false),                          // anchored at the start
        ("*/a", "https://h/a", true),
        ("https://h/a*", "https://h/a/b?c=d/e", true),          // '*' crosses '/' and '?'
        ("https://h/a*e", "https://h/a/b?c=d/e", true),
        ("http*://h/*", "https://h/x", true),
        ("http*://h/*", "http://h/x", true),
        ("http*://h/*", "ftp://h/x", false),
        ("https://h/?", "https://h/a", true),                   // '?' is exactly one character
        ("https://h/?", "https://h/", false),
        ("https://h/?", "https://h/ab", false),
        ("https://h/??", "https://h/ab", true),
        ("https://h/a?c", "https://h/a?c", true),               // '?' matches a literal '?' too
        ("https://h/a?c", "https://h/a/c", true),
        ("https://h/a?c", "https://h/ac", false),
        ("*a*a*b", "aaab", true),
        ("*a*a*b", "aab", true),
        ("*a*a*b", "ab", false),
        ("a**b", "ab", true),
        ("a*?b", "ab", false),
        ("a*?b", "axb", true),
        ("A*", "a", false),                                     // case-sensitive
    ])
    func table(pattern: String, text: String, expected: Bool) {
        #expect(Wildcard.matches(pattern: pattern, text: text) == expected)
    }

    @Test("a pathological pattern against 8,000 characters finishes and does not match")
    func pathological() {
        let text = String(repeating: "a", count: 8000)
        #expect(!Wildcard.matches(pattern: "*a*a*a*a*b", text: text))
        #expect(!Wildcard.matches(pattern: String(repeating: "*a", count: 50) + "b", text: text))
        #expect(Wildcard.matches(pattern: "*a*a*a*a*", text: text))
    }
}

@Suite("CloudFrontBase64")
struct CloudFrontBase64Tests {
    @Test("encoding is standard base64 with + → -, = → _, / → ~")
    func substitutions() {
        #expect(CloudFrontBase64.encode([0xFB, 0xFF]) == "-~8_")   // standard: +/8=
        #expect(CloudFrontBase64.encode([0xFB, 0xEF, 0xBE]) == "----")
        #expect(CloudFrontBase64.encode([0xFF, 0xFF, 0xFF]) == "~~~~")
        #expect(CloudFrontBase64.encode([0x00]) == "AA__")
        #expect(CloudFrontBase64.encode(Array("hello".utf8)) == "aGVsbG8_")
        #expect(CloudFrontBase64.encode([]) == "")
    }

    @Test("decode inverts encode for every length and byte value")
    func roundTrip() {
        for length in 0...7 {
            for seed in 0..<64 {
                let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 37 + seed * 11 + 251) }
                #expect(CloudFrontBase64.decode(CloudFrontBase64.encode(bytes)) == bytes)
            }
        }
        let all = (0...255).map(UInt8.init)
        #expect(CloudFrontBase64.decode(CloudFrontBase64.encode(all)) == all)
    }

    @Test("decode also reads standard base64, padded or not")
    func lenientDecode() {
        #expect(CloudFrontBase64.decode("+/8=") == [0xFB, 0xFF])
        #expect(CloudFrontBase64.decode("-~8") == [0xFB, 0xFF])
        #expect(CloudFrontBase64.decode("aGVsbG8=") == Array("hello".utf8))
    }

    @Test("text that is not base64 decodes to nil", arguments: ["a", "ab!c", "ab_c", "a b=", "abcde", "ab===", "é"])
    func invalid(text: String) {
        #expect(CloudFrontBase64.decode(text) == nil)
    }
}
