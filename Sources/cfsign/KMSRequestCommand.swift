import ArgumentParser
import CFSignKMS
import Foundation

/// Hidden: prints the KMS `Sign` request cfsign would send, SigV4-signed at a given instant, so
/// Tests/system/test_kms.py can hold it against botocore's own request (framing and signature).
/// Sends nothing. Prints the request's headers with the signature, but never the secret key or the
/// session token: `X-Amz-Security-Token` shows as "(redacted)" (the signature covers it, so a
/// test that matches `Authorization` has checked the token all the same).
struct KMSRequest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kms-request",
        abstract: "Print the signed KMS Sign request for a message (testing aid; sends nothing).",
        shouldDisplay: false
    )

    @Option(help: "Key ARN or id.") var keyId: String
    @Option(help: "File holding the message (the policy bytes).") var messageFile: String
    @Option(help: "KMS signing algorithm.") var algorithm: String = "RSASSA_PKCS1_V1_5_SHA_256"
    @Option(help: "Signing time, seconds since 1970.") var at: Int64

    /// Headers that carry a credential itself rather than a signature over it.
    static let secretHeaders: Set<String> = ["x-amz-security-token"]

    func run() throws {
        let message = try [UInt8](Data(contentsOf: URL(fileURLWithPath: messageFile)))
        let client = try KMSClient(keyID: keyId)
        let provider = client.credentials
        let creds = try Blocking.run { () async throws(KMSError) -> AWSCredentials in try await provider.credentials() }
        let body = client.signBody(message, algorithm: algorithm)
        let (url, request) = client.request(action: "Sign", body: body, credentials: creds, at: at)
        var headers: [String: String] = [:]
        for (name, value) in request.headers { headers[name] = Self.secretHeaders.contains(name.lowercased()) ? "(redacted)" : value }
        let object: [String: Any] = ["url": url, "headers": headers, "body": String(decoding: body, as: UTF8.self)]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
