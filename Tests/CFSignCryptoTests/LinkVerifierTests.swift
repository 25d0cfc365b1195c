import Foundation
import Testing
import CFSignCore
import CFSignCrypto

/// `cfsign verify` and `cfsign edge` judge a link the way CloudFront does: these are the answers
/// a signed request gets, from a link the worker's own signer made.
@Suite("SignedRequest and LinkVerifier")
struct LinkVerifierTests {
    static let base = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"
    let now: Int64 = 1_767_000_000
    let signer = LinkSigner(limits: SigningLimits(maximumLifetime: 365 * 86400))

    func key(_ file: String = "rsa2048.p8.pem") throws -> (PrivateKey, LinkVerifier) {
        let key = try PrivateKey.load(file: Fixtures.get().path(file))
        let publicKey = try PublicKey(pem: Array(key.publicKeyPEM.utf8), source: "test")
        return (key, LinkVerifier(keys: ["KTEST": publicKey]))
    }

    func signedURL(_ request: SigningRequest, file: String = "rsa2048.p8.pem") throws -> String {
        let (key, _) = try key(file)
        guard case .url(let url) = try signer.sign(request, key: key, keyID: "KTEST", now: now).output else {
            Issue.record("not a URL")
            return ""
        }
        return url
    }

    /// The reason a signed URL is refused at `at` (nil: CloudFront would serve it).
    func refusal(_ url: String, at: Int64? = nil, viewerIP: UInt32? = nil, file: String = "rsa2048.p8.pem") throws -> Refusal.Reason? {
        let (_, verifier) = try key(file)
        do throws(Refusal) {
            try verifier.verify(try SignedRequest.parse(signedURL: url), now: at ?? now, viewerIP: viewerIP)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test("a canned URL from the signer verifies, for RSA and EC keys", arguments: ["rsa2048.p8.pem", "ec.p8.pem"])
    func cannedVerifies(file: String) throws {
        let url = try signedURL(try SigningRequest(url: Self.base, expiry: .after(seconds: 600)), file: file)
        #expect(try refusal(url, file: file) == nil)
    }

    @Test("a custom SHA256 URL with a wildcard resource verifies, and its other query parameters are kept")
    func customVerifies() throws {
        let request = try SigningRequest(url: Self.base + "?v=2", expiry: .after(seconds: 600),
                                         resource: "https://d111111abcdef8.cloudfront.net/invoices/*", hash: .sha256)
        let url = try signedURL(request)
        let parsed = try SignedRequest.parse(signedURL: url)
        #expect(parsed.url == Self.base + "?v=2")
        #expect(parsed.hash == .sha256)
        #expect(parsed.policy.kind == .custom)
        #expect(try refusal(url) == nil)
    }

    @Test("signed cookies verify against the request URL")
    func cookiesVerify() throws {
        let (key, verifier) = try key("ec.p8.pem")
        let request = try SigningRequest(url: Self.base, expiry: .after(seconds: 600),
                                         resource: "https://d111111abcdef8.cloudfront.net/*", output: .cookies)
        guard case .cookies(let cookies) = try signer.sign(request, key: key, keyID: "KTEST", now: now).output else {
            Issue.record("not cookies")
            return
        }
        let parsed = try SignedRequest.parse(url: "https://d111111abcdef8.cloudfront.net/other/file.txt", cookies: cookies)
        try verifier.verify(parsed, now: now, viewerIP: nil)
    }

    @Test("a changed URL is bad_signature")
    func tamperedURL() throws {
        let url = try signedURL(try SigningRequest(url: Self.base, expiry: .after(seconds: 600)))
        #expect(try refusal(url.replacingOccurrences(of: "/42.pdf", with: "/43.pdf")) == .badSignature)
    }

    @Test("a changed expiry is bad_signature")
    func tamperedExpiry() throws {
        let url = try signedURL(try SigningRequest(url: Self.base, expiry: .at(now + 600)))
        #expect(try refusal(url.replacingOccurrences(of: "Expires=\(now + 600)", with: "Expires=\(now + 6000)")) == .badSignature)
    }

    @Test("a key id the verifier does not trust is unknown_key, and the message lists the known ids")
    func unknownKey() throws {
        let url = try signedURL(try SigningRequest(url: Self.base, expiry: .after(seconds: 600)))
        let other = url.replacingOccurrences(of: "Key-Pair-Id=KTEST", with: "Key-Pair-Id=KOTHER")
        let (_, verifier) = try key()
        do throws(Refusal) {
            try verifier.verify(try SignedRequest.parse(signedURL: other), now: now, viewerIP: nil)
            Issue.record("verified under an unknown key")
        } catch {
            #expect(error.reason == .unknownKey)
            #expect(error.message.contains("KOTHER") && error.message.contains("known: KTEST"))
        }
    }

    @Test("a link is expired at and after its expiry, valid one second before")
    func expiry() throws {
        let url = try signedURL(try SigningRequest(url: Self.base, expiry: .at(now + 600)))
        #expect(try refusal(url, at: now + 599) == nil)
        #expect(try refusal(url, at: now + 600) == .expired)
    }

    @Test("a link with starts_at is not_yet_valid before it")
    func notYetValid() throws {
        let url = try signedURL(try SigningRequest(url: Self.base, expiry: .after(seconds: 600), startsAt: now + 60))
        #expect(try refusal(url, at: now + 59) == .notYetValid)
        #expect(try refusal(url, at: now + 60) == nil)
    }

    @Test("an IP-bound link needs the viewer's address and refuses one outside the range")
    func viewerIP() throws {
        let request = try SigningRequest(url: Self.base, expiry: .after(seconds: 600), ip: try IPv4Range(parsing: "192.0.2.0/24"))
        let url = try signedURL(request)
        #expect(try refusal(url) == .needsViewerIP)
        #expect(try refusal(url, viewerIP: 0xC000_0207) == nil)  // 192.0.2.7
        #expect(try refusal(url, viewerIP: 0xC633_6407) == .ipNotAllowed)  // 198.51.100.7
    }

    @Test("a URL outside the policy's resource is resource_mismatch")
    func resourceMismatch() throws {
        let request = try SigningRequest(url: Self.base, expiry: .after(seconds: 600),
                                         resource: "https://d111111abcdef8.cloudfront.net/invoices/*")
        let url = try signedURL(request)
        let moved = url.replacingOccurrences(of: "/invoices/42.pdf", with: "/private/42.pdf")
        #expect(try refusal(moved) == .resourceMismatch)
    }

    @Test("a wildcard link used on a path with a dot segment is path_traversal")
    func dotSegmentRefused() throws {
        let request = try SigningRequest(url: Self.base, expiry: .after(seconds: 600),
                                         resource: "https://d111111abcdef8.cloudfront.net/invoices/*")
        let url = try signedURL(request)
        let climbed = url.replacingOccurrences(of: "/invoices/42.pdf", with: "/invoices/../secret.pdf")
        #expect(try refusal(climbed) == .pathTraversal)
    }

    @Test("missing signing parameters are named", arguments: [
        ("https://d.example/a", Refusal.Reason.missingKeyPairID),
        ("https://d.example/a?Key-Pair-Id=K", .missingSignature),
        ("https://d.example/a?Key-Pair-Id=K&Signature=AAAA", .missingPolicy),
        ("https://d.example/a?Key-Pair-Id=K&Signature=AAAA&Expires=soon", .malformedPolicy),
        ("https://d.example/a?Key-Pair-Id=K&Signature=AAAA&Expires=1&Hash-Algorithm=MD5", .unsupportedHash),
        ("https://d.example/a?Key-Pair-Id=K&Signature=AAAA&Policy=e30_", .malformedPolicy),
        // A policy naming Resource twice: readers disagree on which one counts.
        ("https://d.example/a?Key-Pair-Id=K&Signature=AAAA&Policy=eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly9kLmV4YW1wbGUvYSIsIlJlc291cmNlIjoiKiIsIkNvbmRpdGlvbiI6eyJEYXRlTGVzc1RoYW4iOnsiQVdTOkVwb2NoVGltZSI6OTk5OTk5OTk5OX19fV19", .malformedPolicy),
    ])
    func missingParts(url: String, reason: Refusal.Reason) {
        do throws(Refusal) {
            _ = try SignedRequest.parse(signedURL: url)
            Issue.record("parsed \(url)")
        } catch {
            #expect(error.reason == reason, "\(url): \(error.message)")
        }
    }

    @Test("split keeps the other parameters in order and drops only the signing ones")
    func split() {
        let (url, parameters) = SignedRequest.split("https://d.example/a?x=1&Expires=5&y=2&Signature=S&Key-Pair-Id=K")
        #expect(url == "https://d.example/a?x=1&y=2")
        #expect(parameters.map(\.0) == ["Expires", "Signature", "Key-Pair-Id"])
    }
}
