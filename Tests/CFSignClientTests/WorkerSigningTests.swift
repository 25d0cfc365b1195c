import CFSignClient
import CFSignCore
import CFSignCrypto
import CFSignRedis
import CFSignTestSupport
import Foundation
import Testing

/// The producer client against a real `cfsign worker` process (each test has its own Redis and worker).
@Suite("Signing through a worker")
struct SigningTests {
    static let object = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"

    private func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// Checks the link's signature the way CloudFront does, with the public half of the fleet's key.
    private func verify(_ request: SignedRequest, _ fleet: Fleet, viewerIP: UInt32? = nil) throws {
        let keys = try #require(fleet.keys)
        let privateKey = try PrivateKey.load(file: keys.file(Fleet.keyID))
        let publicKey = try PublicKey(pem: Array(privateKey.publicKeyPEM.utf8), source: "test key")
        try LinkVerifier(keys: [Fleet.keyID: publicKey]).verify(request, now: now(), viewerIP: viewerIP)
    }

    @Test func signURLReturnsACannedLinkWithExpiresSignatureAndKeyPairId() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let before = now()
        let link = try await client.sign(url: Self.object, expiresIn: 3600)
        let url = try #require(link.url, "worker log:\n\(fleet.workerLog)")
        #expect(url.hasPrefix(Self.object + "?Expires=\(link.expiresAt)&Signature="))
        #expect(url.hasSuffix("&Key-Pair-Id=\(Fleet.keyID)"))
        #expect(link.keyID == Fleet.keyID)
        #expect(link.policy == "canned")
        #expect(link.cookies == nil)
        #expect(link.expiresAt >= before + 3600 && link.expiresAt <= now() + 3600)
        #expect(link.plainText == url)
        try verify(SignedRequest.parse(signedURL: url), fleet)
    }

    @Test func signURLWithAnIPRangeUsesACustomPolicy() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let link = try await client.sign(url: Self.object, expiresIn: 600, ip: "192.0.2.0/24")
        let url = try #require(link.url)
        #expect(link.policy == "custom")
        #expect(url.hasPrefix(Self.object + "?Policy="))
        #expect(!url.contains("Expires="))
        try verify(SignedRequest.parse(signedURL: url), fleet, viewerIP: 0xC000_0207)  // 192.0.2.7
    }

    @Test func signCookiesReturnsCloudFrontCookies() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let link = try await client.signCookies(url: Self.object, expiresIn: 3600)
        let cookies = try #require(link.cookies, "worker log:\n\(fleet.workerLog)")
        #expect(link.url == nil)
        #expect(link.policy == "canned")
        #expect(cookies.map(\.name) == ["CloudFront-Expires", "CloudFront-Signature", "CloudFront-Key-Pair-Id"])
        #expect(cookies.first { $0.name == "CloudFront-Expires" }?.value == String(link.expiresAt))
        #expect(cookies.first { $0.name == "CloudFront-Key-Pair-Id" }?.value == Fleet.keyID)
        #expect(link.plainText.split(separator: "\n").count == 3)
        try verify(SignedRequest.parse(url: Self.object, cookies: cookies.map { ($0.name, $0.value) }), fleet)
    }

    @Test func batchOf200RequestsReturns200ResultsInRequestOrder() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let urls = (0..<200).map { "https://d111111abcdef8.cloudfront.net/batch/file-\($0).pdf" }
        let requests = try urls.map { try SignRequest(url: $0, expiresIn: 600) }
        let results = await client.sign(requests, timeout: .seconds(20))
        #expect(results.count == 200)
        for (url, result) in zip(urls, results) {
            switch result {
            case .success(let link):
                #expect(link.url?.hasPrefix(url + "?Expires=") == true, "expected a link for \(url), got \(link.url ?? "nil")")
            case .failure(let error):
                Issue.record("\(url): \(error)")
            }
        }
    }

    @Test func batchResultsSucceedOrFailEachOnTheirOwn() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let requests = [
            try SignRequest(url: Self.object, expiresIn: 600),
            try SignRequest(url: Self.object, expiresIn: 600, keyID: "KNOTINTHEGROUP"),
            try SignRequest(url: Self.object + "?v=2", expiresIn: 600),
        ]
        let results = await client.sign(requests)
        #expect(results.count == 3)
        #expect((try? results[0].get())?.url?.hasPrefix(Self.object + "?Expires=") == true)
        #expect(results[1].failureCode == .unknownKey)
        #expect((try? results[2].get())?.url?.hasPrefix(Self.object + "?v=2&Expires=") == true)
    }

    @Test func keyIDNotInTheGroupFailsWithUnknownKey() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let error = await #expect(throws: CFSignClientError.self) {
            try await client.sign(url: Self.object, expiresIn: 600, keyID: "KNOTINTHEGROUP")
        }
        #expect(error?.code == .unknownKey, "worker log:\n\(fleet.workerLog)")
        guard case .signing(.unknownKey, let message)? = error else { return }
        #expect(message.contains("KNOTINTHEGROUP"))
    }

    @Test func expiryPastTheWorkersMaximumLifetimeFailsWithTTLTooLong() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let error = await #expect(throws: CFSignClientError.self) {
            try await client.sign(url: Self.object, expiresIn: 400 * 86400)
        }
        #expect(error?.code == .ttlTooLong)
    }
}

extension Result where Failure == CFSignClientError {
    /// The contract's error code of a failed result.
    var failureCode: ErrorCode? {
        if case .failure(let e) = self { return e.code }
        return nil
    }
}
