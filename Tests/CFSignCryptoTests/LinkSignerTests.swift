import Testing
import CFSignCore
import CFSignCrypto

@Suite("LinkSigner end to end")
struct LinkSignerTests {
    let url = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"
    let now: Int64 = 1_767_000_000
    let signer = LinkSigner(limits: SigningLimits(maximumLifetime: 365 * 86400))

    func keys(_ file: String) throws -> (PrivateKey, PublicKey) {
        let key = try PrivateKey.load(file: Fixtures.get().path(file))
        return (key, try PublicKey(pem: Array(key.publicKeyPEM.utf8), source: "test"))
    }

    @Test("a canned RSA SHA1 URL is exactly what openssl's signature gives, and verifies")
    func cannedKnownAnswer() throws {
        let f = try Fixtures.get()
        let (key, publicKey) = try keys("rsa2048.p8.pem")
        let request = try SigningRequest(url: url, expiry: .at(1_767_225_600))
        let link = try signer.sign(request, key: key, keyID: "K2JCJMDEHXQW5F", now: now)
        let signature = CloudFrontBase64.encode(try f.contents("rsa2048.sha1.sig"))
        #expect(link.output == .url("\(url)?Expires=1767225600&Signature=\(signature)&Key-Pair-Id=K2JCJMDEHXQW5F"))
        let items = queryItems(link.plainText)
        let decoded = try #require(CloudFrontBase64.decode(items[1].value))
        #expect(publicKey.verify(signature: decoded, message: Fixtures.policy.bytes, hash: .sha1))
    }

    @Test("a custom SHA256 URL carries a policy whose signature verifies", arguments: ["rsa2048.p1.pem", "ec.sec1.pem"])
    func customURL(file: String) throws {
        let (key, publicKey) = try keys(file)
        let request = try SigningRequest(
            url: url + "?v=2", expiry: .after(seconds: 3600), startsAt: now - 60, ip: try IPv4Range(parsing: "192.0.2.0/24"),
            resource: "https://d111111abcdef8.cloudfront.net/invoices/*", hash: .sha256)
        let link = try signer.sign(request, key: key, keyID: "KID", now: now)
        #expect(link.policyKind == .custom)
        #expect(link.expiresAt == now + 3600)
        let items = queryItems(link.plainText)
        #expect(items.map(\.name) == ["v", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"])
        #expect(items[3].value == "KID")
        #expect(items[4].value == "SHA256")
        let policy = try #require(CloudFrontBase64.decode(items[1].value))
        #expect(String(decoding: policy, as: UTF8.self) == #"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/invoices/*","Condition":{"DateLessThan":{"AWS:EpochTime":1767003600},"IpAddress":{"AWS:SourceIp":"192.0.2.0/24"},"DateGreaterThan":{"AWS:EpochTime":1766999940}}}]}"#)
        let signature = try #require(CloudFrontBase64.decode(items[2].value))
        #expect(publicKey.verify(signature: signature, message: policy, hash: .sha256))
    }

    @Test("cookies carry the same policy and a signature that verifies")
    func cookies() throws {
        let (key, publicKey) = try keys("ec.p8.pem")
        let request = try SigningRequest(url: url, expiry: .after(seconds: 60), resource: "https://d111111abcdef8.cloudfront.net/*", output: .cookies)
        let link = try signer.sign(request, key: key, keyID: "KEC", now: now)
        guard case .cookies(let cookies) = link.output else { Issue.record("not cookies"); return }
        #expect(cookies.map(\.name) == ["CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id"])
        let policy = try #require(CloudFrontBase64.decode(cookies[0].value))
        let signature = try #require(CloudFrontBase64.decode(cookies[1].value))
        #expect(publicKey.verify(signature: signature, message: policy, hash: .sha1))
    }

    @Test("RSA links are deterministic: equal inputs give equal URLs")
    func deterministic() throws {
        let (key, _) = try keys("rsa2048.p1.pem")
        let request = try SigningRequest(url: url, expiry: .after(seconds: 600))
        #expect(try signer.sign(request, key: key, keyID: "K", now: now) == signer.sign(request, key: key, keyID: "K", now: now))
    }

    @Test("planning errors come out of sign with their codes")
    func errors() throws {
        let (key, _) = try keys("ec.sec1.pem")
        let tooLong = try SigningRequest(url: url, expiry: .after(seconds: 366 * 86400))
        #expect(signingCode { _ = try signer.sign(tooLong, key: key, keyID: "K", now: now) } == .ttlTooLong)
        let past = try SigningRequest(url: url, expiry: .at(now))
        #expect(signingCode { _ = try signer.sign(past, key: key, keyID: "K", now: now) } == .invalidExpiry)
        let noSHA1 = LinkSigner(limits: SigningLimits(maximumLifetime: nil, supportedHashes: [.sha256]))
        let request = try SigningRequest(url: url, expiry: .after(seconds: 60))
        #expect(signingCode { _ = try noSHA1.sign(request, key: key, keyID: "K", now: now) } == .unsupportedHash)
    }

    @Test("a key from a loaded group signs links that verify against its public_key_pem")
    func fromGroup() throws {
        let f = try Fixtures.get()
        let doc = try KeyGroupDocument(version: 1, active: "KRSA", keys: [
            .init(id: "KRSA", source: .file(f.path("rsa2048.p8.pem")), publicKeyPEM: try f.text("rsa2048.pub.pem")),
        ])
        let group = try SigningKeyGroup.load(doc, options: KeyLoadOptions())
        let (id, key) = try group.key(for: nil)
        let link = try signer.sign(SigningRequest(url: url, expiry: .at(1_767_225_600), hash: .sha256), key: key, keyID: id, now: now)
        let items = queryItems(link.plainText)
        #expect(items.map(\.name) == ["Expires", "Signature", "Key-Pair-Id", "Hash-Algorithm"])
        let signature = try #require(CloudFrontBase64.decode(items[1].value))
        #expect(try PublicKey.load(file: f.path("rsa2048.pub.pem")).verify(signature: signature, message: Fixtures.policy.bytes, hash: .sha256))
        #expect(signature == (try f.contents("rsa2048.sha256.sig")))
    }
}

func signingCode(_ body: () throws -> Void) -> ErrorCode? {
    do { try body(); return nil } catch let error as SigningError { return error.code } catch { return nil }
}
