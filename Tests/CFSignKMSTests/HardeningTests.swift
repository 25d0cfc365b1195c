@testable import CFSignKMS
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A 127.0.0.1 port nothing listens on (bound, then closed): connections to it are refused.
private func closedPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

@Suite struct AWSErrorTextTests {
    @Test func longErrorMessagesAreCutTo256Bytes() {
        let body = Array(#"{"__type":"AccessDeniedException","message":"\#(String(repeating: "é", count: 5000))"}"#.utf8)
        let e = KMSError.from(status: 400, body: body, service: "KMS Sign")
        let quoted = e.message.components(separatedBy: " (HTTP 400").first ?? ""
        #expect(quoted.utf8.count <= KMSError.messageLimit)
        #expect(quoted.hasSuffix("…"))
        #expect(e.message.hasSuffix("(HTTP 400 from KMS Sign)"))
    }

    @Test func controlCharactersInErrorTextAreReplaced() {
        let body = Array(#"{"__type":"Access\u001b[31mDenied","message":"line one\nforged: log line\r\u0007"}"#.utf8)
        let e = KMSError.from(status: 400, body: body, service: "KMS Sign")
        #expect(!e.description.unicodeScalars.contains { $0.properties.generalCategory == .control })
        #expect(e.message.hasPrefix("line one\u{FFFD}forged: log line\u{FFFD}\u{FFFD}"))
        #expect(e.code == "Access\u{FFFD}[31mDenied")
    }

    @Test func longErrorCodesAreCut() {
        let e = KMSError.from(status: 400, body: Array(#"{"__type":"\#(String(repeating: "X", count: 1000))"}"#.utf8), service: "KMS Sign")
        #expect((e.code ?? "").utf8.count <= KMSError.codeLimit)
    }

    @Test func stsErrorTextIsBoundedToo() {
        let xml = "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>\(String(repeating: "a", count: 100_000))</Message></Error></ErrorResponse>"
        let e = KMSError.from(status: 400, body: Array(xml.utf8), service: "STS")
        #expect(e.message.utf8.count < KMSError.messageLimit + 64)
    }

    @Test func shortCleanTextIsKeptAsIs() {
        #expect(KMSError.bounded("User is not authorized to perform: kms:Sign", limit: 256) == "User is not authorized to perform: kms:Sign")
    }
}

@Suite struct EndpointOverrideTests {
    @Test func plainHTTPToALoopbackHostIsAccepted() throws {
        for url in ["http://127.0.0.1:5000", "http://127.0.0.2", "http://[::1]:4566", "http://localhost:4566/"] {
            let env = AWSEnvironment(["AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/nonexistent"])
            _ = try KMSClient(keyID: "arn:aws:kms:us-east-1:111122223333:key/k", environment: env)
        }
    }

    @Test func plainHTTPElsewhereIsRefusedNamingTheVariable() {
        for (variable, url) in [("AWS_ENDPOINT_URL_KMS", "http://kms.example.com"), ("AWS_ENDPOINT_URL", "http://10.0.0.5:4566"),
                                ("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1.evil.example"), ("AWS_ENDPOINT_URL", "http://[2001:db8::1]")] {
            let env = AWSEnvironment([variable: url, "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/nonexistent"])
            do {
                _ = try KMSClient(keyID: "arn:aws:kms:us-east-1:111122223333:key/k", environment: env)
                Issue.record("\(url) was accepted")
            } catch {
                #expect(error.message.contains(variable), "\(error.message)")
                #expect(error.message.contains("loopback"), "\(error.message)")
            }
        }
    }

    @Test func httpsAnywhereIsAccepted() throws {
        let env = AWSEnvironment(["AWS_ENDPOINT_URL_KMS": "https://kms.example.com:8443", "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/nonexistent"])
        let client = try KMSClient(keyID: "arn:aws:kms:us-east-1:111122223333:key/k", environment: env)
        #expect(client.target.host == "kms.example.com:8443")
    }

    @Test func aPlainHTTPStsOverrideRefusesWebIdentityAtOnce() {
        let env = AWSEnvironment(["AWS_ENDPOINT_URL_STS": "http://sts.example.com", "AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent/token",
                                  "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/r", "HOME": "/nonexistent"])
        do {
            _ = try env.credentialProvider(region: "us-east-1", http: .shared, timeout: .seconds(1))
            Issue.record("accepted")
        } catch {
            #expect(error.message.contains("AWS_ENDPOINT_URL_STS"))
        }
    }
}

@Suite struct WebIdentityRefreshTests {
    func provider(held: WebIdentityCredentials.Held?, tokenFile: String = "/proc/self/cmdline") -> WebIdentityCredentials {
        let sts = STSClient(endpoint: "http://127.0.0.1:\(closedPort())", region: "us-east-1", http: .shared, timeout: .milliseconds(300))
        return WebIdentityCredentials(roleARN: "arn:aws:iam::111122223333:role/r", tokenFile: tokenFile, sessionName: "t", sts: sts, held: held)
    }

    @Test func manyConcurrentCallersWithNothingValidMakeOneSTSCall() async {
        let p = provider(held: nil)
        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    do { _ = try await p.credentials(); return false } catch { return true }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == 50)
        #expect(p.refreshCount == 1)
    }

    @Test func aFailedRenewalKeepsTheStillValidCredentials() async throws {
        let now = Date()
        let old = AWSCredentials(accessKeyID: "ASIAOLD", secretAccessKey: "s", sessionToken: "t", expiration: now.addingTimeInterval(120))
        let p = provider(held: .init(credentials: old, renewAt: now.addingTimeInterval(-1), expiresAt: now.addingTimeInterval(120)))
        for _ in 0..<20 { #expect(try await p.credentials().accessKeyID == "ASIAOLD") }
        // Let the one renewal fail, then ask again: still the old ones, and no second STS call yet.
        try await Task.sleep(nanoseconds: 1_000_000_000)
        #expect(try await p.credentials().accessKeyID == "ASIAOLD")
        #expect(p.refreshCount == 1)
    }

    @Test func anUnreadableExpirationMeansRenewSoonNotNever() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let expiry = STSClient.expiration("not a date", now: now)
        #expect(expiry == now.addingTimeInterval(900))
        #expect(STSClient.expiration(nil, now: now) == now.addingTimeInterval(900))
        let held = WebIdentityCredentials.held(AWSCredentials(accessKeyID: "A", secretAccessKey: "s", expiration: expiry), fetchedAt: now)
        #expect(held.renewAt < expiry)
        #expect(held.renewAt > now)
    }

    @Test func anExpirationBeyondSTSsLongestSessionIsNotBelieved() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(STSClient.expiration("9999-12-31T23:59:59Z", now: now) == now.addingTimeInterval(43_200))
        #expect(STSClient.expiration("2027-01-15T12:00:00Z", now: now) == STSClient.date("2027-01-15T12:00:00Z"))
    }

    @Test func shortLivedCredentialsAreRenewedHalfwayNotOnEveryCall() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let c = AWSCredentials(accessKeyID: "A", secretAccessKey: "s", expiration: now.addingTimeInterval(200))
        #expect(WebIdentityCredentials.held(c, fetchedAt: now).renewAt == now.addingTimeInterval(100))
    }
}
