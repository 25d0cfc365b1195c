import Testing
import CFSignCore

/// A fixed "signature" whose base64 shows all three substitutions: standard `+/8=`, CloudFront `-~8_`.
let fakeSignature: [UInt8] = [0xFB, 0xFF]

func signedLink(url: String = objectURL, resource: String? = nil, ip: String? = nil, output: OutputKind = .url,
          hash: HashAlgorithm = .sha1, keyID: String = "K2JCJMDEHXQW5F") throws -> SignedLink {
    let request = try SigningRequest(
        url: url, expiry: .at(1_767_225_600), ip: try ip.map { (t) throws(SigningError) in try IPv4Range(parsing: t) },
        resource: resource, output: output, hash: hash)
    let plan = try SigningPlan(request, now: 1_767_000_000, limits: SigningLimits(maximumLifetime: nil))
    return SignedLink(plan: plan, policyBytes: plan.policy.bytes, signature: fakeSignature, keyID: keyID)
}

@Suite("SignedLink")
struct SignedLinkTests {
    @Test("a canned URL appends Expires, Signature and Key-Pair-Id after '?'")
    func cannedURL() throws {
        let l = try signedLink()
        #expect(l.output == .url(objectURL + "?Expires=1767225600&Signature=-~8_&Key-Pair-Id=K2JCJMDEHXQW5F"))
        #expect(l.keyID == "K2JCJMDEHXQW5F")
        #expect(l.expiresAt == 1_767_225_600)
        #expect(l.policyKind == .canned)
    }

    @Test("a URL that already has a query gets the parameters after '&'")
    func existingQuery() throws {
        let l = try signedLink(url: objectURL + "?download=1")
        #expect(l.plainText == objectURL + "?download=1&Expires=1767225600&Signature=-~8_&Key-Pair-Id=K2JCJMDEHXQW5F")
    }

    @Test("a custom URL carries the base64 policy instead of Expires")
    func customURL() throws {
        let resource = "https://d111111abcdef8.cloudfront.net/*"
        let l = try signedLink(resource: resource)
        let policy = Policy(kind: .custom, resource: resource, expiresAt: 1_767_225_600)
        let b64 = CloudFrontBase64.encode(policy.bytes)
        #expect(l.plainText == objectURL + "?Policy=\(b64)&Signature=-~8_&Key-Pair-Id=K2JCJMDEHXQW5F")
        #expect(l.policyKind == .custom)
        #expect(!b64.contains("+") && !b64.contains("/") && !b64.contains("="))
    }

    @Test("SHA256 adds Hash-Algorithm=SHA256 last; SHA1 adds nothing")
    func hashAlgorithmParameter() throws {
        #expect(try signedLink(hash: .sha256).plainText == objectURL + "?Expires=1767225600&Signature=-~8_&Key-Pair-Id=K2JCJMDEHXQW5F&Hash-Algorithm=SHA256")
        #expect(try !signedLink(hash: .sha1).plainText.contains("Hash-Algorithm"))
    }

    @Test("canned cookies are CloudFront-Expires, -Signature, -Key-Pair-Id in that order")
    func cannedCookies() throws {
        guard case .cookies(let c) = try signedLink(output: .cookies).output else { Issue.record("not cookies"); return }
        #expect(c.map(\.name) == ["CloudFront-Expires", "CloudFront-Signature", "CloudFront-Key-Pair-Id"])
        #expect(c.map(\.value) == ["1767225600", "-~8_", "K2JCJMDEHXQW5F"])
    }

    @Test("custom cookies carry CloudFront-Policy; SHA256 adds CloudFront-Hash-Algorithm last")
    func customCookies() throws {
        let l = try signedLink(ip: "192.0.2.7", output: .cookies, hash: .sha256)
        guard case .cookies(let c) = l.output else { Issue.record("not cookies"); return }
        #expect(c.map(\.name) == ["CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id", "CloudFront-Hash-Algorithm"])
        #expect(c.last?.value == "SHA256")
        let policy = try #require(CloudFrontBase64.decode(c[0].value))
        #expect(String(decoding: policy, as: UTF8.self).contains(#""AWS:SourceIp":"192.0.2.7/32""#))
    }

    @Test("plain text of cookies is one Name=value line per cookie")
    func cookieLines() throws {
        #expect(try signedLink(output: .cookies).plainText == "CloudFront-Expires=1767225600\nCloudFront-Signature=-~8_\nCloudFront-Key-Pair-Id=K2JCJMDEHXQW5F")
    }
}

@Suite("ReplyEncoder")
struct ReplyEncoderTests {
    func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test("a URL success reply is compact JSON: id, ok, url, key_id, expires_at, policy")
    func successURL() throws {
        let reply = text(ReplyEncoder.success(id: "inv-2026-11-0042", link: try signedLink()))
        #expect(reply == #"{"id":"inv-2026-11-0042","ok":true,"url":"https://d111111abcdef8.cloudfront.net/invoices/42.pdf?Expires=1767225600&Signature=-~8_&Key-Pair-Id=K2JCJMDEHXQW5F","key_id":"K2JCJMDEHXQW5F","expires_at":1767225600,"policy":"canned"}"#)
    }

    @Test("a cookie success reply carries a cookies object instead of url, in cookie order")
    func successCookies() throws {
        let reply = text(ReplyEncoder.success(id: "a", link: try signedLink(output: .cookies, hash: .sha256)))
        #expect(reply == #"{"id":"a","ok":true,"cookies":{"CloudFront-Expires":"1767225600","CloudFront-Signature":"-~8_","CloudFront-Key-Pair-Id":"K2JCJMDEHXQW5F","CloudFront-Hash-Algorithm":"SHA256"},"key_id":"K2JCJMDEHXQW5F","expires_at":1767225600,"policy":"canned"}"#)
    }

    @Test("a custom-policy success reply says policy custom")
    func successCustom() throws {
        let reply = text(ReplyEncoder.success(id: "a", link: try signedLink(resource: "*")))
        #expect(reply.hasSuffix(#","policy":"custom"}"#))
    }

    @Test("a failure reply is {id, ok:false, error:{code, message}}")
    func failure() {
        let error = SigningError(.invalidURL, "url has a fragment (#...); CloudFront never sees fragments")
        #expect(text(ReplyEncoder.failure(id: "inv-2026-11-0042", error: error)) == #"{"id":"inv-2026-11-0042","ok":false,"error":{"code":"invalid_url","message":"url has a fragment (#...); CloudFront never sees fragments"}}"#)
    }

    @Test("ids and messages are JSON-escaped in replies")
    func escaping() throws {
        let reply = ReplyEncoder.failure(id: "a\"b\\c\n", error: SigningError(.internal, "x \"y\""))
        #expect(text(reply) == #"{"id":"a\"b\\c\n","ok":false,"error":{"code":"internal","message":"x \"y\""}}"#)
        #expect(try JSONReader.parse(reply)[member: "id"] == .string("a\"b\\c\n"))
    }

    @Test("a dead entry is {error, job, worker, at} with the raw job as a string")
    func dead() {
        let entry = ReplyEncoder.dead(error: SigningError(.invalidJob, "job is an array, not a JSON object"),
                                      job: Array(#"["x"]"#.utf8), worker: "host-1-ab", atMilliseconds: 1_767_225_600_123)
        #expect(text(entry) == #"{"error":{"code":"invalid_job","message":"job is an array, not a JSON object"},"job":"[\"x\"]","worker":"host-1-ab","at":1767225600123}"#)
    }

    func deadJob(_ raw: [UInt8]) throws -> String {
        let entry = ReplyEncoder.dead(error: SigningError(.invalidJob, "m"), job: raw, worker: "w", atMilliseconds: 0)
        guard case .string(let job)? = try JSONReader.parse(entry)[member: "job"] else { throw SigningError(.internal, "no job") }
        return job
    }

    @Test("the dead entry's job is truncated to 1 KiB")
    func truncated() throws {
        #expect(ReplyEncoder.deadJobExcerpt == 1024)
        #expect(try deadJob([UInt8](repeating: UInt8(ascii: "a"), count: 5000)) == String(repeating: "a", count: 1024))
        #expect(try deadJob([UInt8](repeating: UInt8(ascii: "a"), count: 1024)) == String(repeating: "a", count: 1024))
    }

    @Test("a character split by the 1 KiB cut is dropped, not turned into U+FFFD")
    func cutOnCharacter() throws {
        let before = String(repeating: "a", count: 1023)
        #expect(try deadJob(Array((before + "é tail").utf8)) == before)
        let justFits = String(repeating: "a", count: 1022) + "é"
        #expect(try deadJob(Array((justFits + "tail").utf8)) == justFits)
        let emoji = String(repeating: "a", count: 1021) + "😀"
        #expect(try deadJob(Array((emoji + "tail").utf8)) == String(repeating: "a", count: 1021))
    }

    @Test("bytes of the dead job that are not UTF-8 become U+FFFD")
    func invalidUTF8() throws {
        #expect(try deadJob([0x61, 0xFF, 0x62, 0xC3, 0x28]) == "a\u{FFFD}b\u{FFFD}(")
    }
}
