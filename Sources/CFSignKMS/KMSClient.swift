import Foundation

/// The KMS public key of a key, as `GetPublicKey` reports it.
public struct KMSPublicKey: Sendable {
    /// DER SubjectPublicKeyInfo.
    public let der: [UInt8]
    public let keyID: String
    public let keySpec: String
    public let keyUsage: String
    public let signingAlgorithms: [String]
}

/// KMS `Sign` and `GetPublicKey` for one key, over the shared HTTPS client, SigV4-signed with the
/// credentials of the chain `AWSEnvironment` found; each call bounded by `timeout`
/// (`kms_call_timeout`). Knows nothing of CloudFront: cfsign's `KMSKey` decides what to sign.
public final class KMSClient: Sendable {
    public let keyID: String
    public let region: String
    public let endpoint: String
    public let credentials: any CredentialProvider
    public let timeout: Duration
    let target: Endpoint
    let http: KMSHTTP

    public enum MessageType: String, Sendable {
        case raw = "RAW"
        case digest = "DIGEST"
    }

    /// KMS signs at most this many message bytes with `MessageType=RAW`.
    public static let rawLimit = 4096

    /// The key named by `keyID` (an ARN, or a key id / alias with the region from the environment).
    public init(keyID: String, environment: AWSEnvironment = AWSEnvironment(), timeout: Duration = .seconds(2), http: KMSHTTP = .shared) throws(KMSError) {
        guard !keyID.isEmpty else { throw KMSError(.invalid, code: nil, "names no key (awskms:<key ARN or id>)") }
        self.keyID = keyID
        let fromARN: String?
        if keyID.hasPrefix("arn:") {
            let parts = keyID.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
            guard parts.count == 6, parts[2] == "kms", !parts[3].isEmpty, parts[5].hasPrefix("key/") || parts[5].hasPrefix("alias/") else {
                throw KMSError(.invalid, code: nil, "\"\(keyID)\" is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
            }
            fromARN = String(parts[3])
        } else {
            fromARN = nil
        }
        guard let region = fromARN ?? environment.region else {
            throw KMSError(.invalid, code: nil, "names key \"\(keyID)\" without a region: give the key's ARN, or set AWS_REGION")
        }
        self.region = region
        self.endpoint = environment.endpoint(service: "kms", region: region)
        self.target = try Endpoint(endpoint, service: "kms", variable: environment.endpointVariable(service: "kms"))
        self.timeout = timeout
        self.http = http
        self.credentials = try environment.credentialProvider(region: region, http: http, timeout: timeout)
    }

    /// What KMS is sent for `message`: the bytes themselves up to 4,096, their SHA-256 above.
    public static func framing(_ message: [UInt8]) -> (bytes: [UInt8], type: MessageType) {
        message.count <= rawLimit ? (message, .raw) : (Digests.sha256(message), .digest)
    }

    /// The JSON body of a `Sign` call.
    public func signBody(_ message: [UInt8], algorithm: String) -> [UInt8] {
        let (bytes, type) = Self.framing(message)
        let object: [String: Any] = ["KeyId": keyID, "Message": Data(bytes).base64EncodedString(), "MessageType": type.rawValue, "SigningAlgorithm": algorithm]
        return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data())
    }

    /// The request for one call, signed at `time` (seconds since 1970): for `call` and its tests.
    public func request(action: String, body: [UInt8], credentials: AWSCredentials, at time: Int64) -> (url: String, request: SigV4.Request) {
        var request = SigV4.Request(method: "POST", headers: [
            ("Host", target.host), ("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", "TrentService.\(action)"),
        ], body: body)
        SigV4(region: region, service: "kms").sign(&request, credentials: credentials, at: time)
        return (target.url, request)
    }

    func call(_ action: String, body: [UInt8]) async throws(KMSError) -> [String: Any] {
        let creds = try await credentials.credentials()
        let signed = request(action: action, body: body, credentials: creds, at: Int64(Date().timeIntervalSince1970))
        let answer = try await http.post(signed.url, headers: signed.request.headers, body: body, timeout: timeout, service: "KMS")
        guard answer.status == 200 else {
            throw KMSError.from(status: answer.status, body: answer.body, errorTypeHeader: answer.errorType, service: "KMS \(action)")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(answer.body))) as? [String: Any] else {
            throw KMSError(.unavailable, code: nil, "KMS \(action) answered HTTP 200 with a body that is not a JSON object")
        }
        return object
    }

    /// Signs `message` (RAW up to 4,096 bytes, else its SHA-256 as a DIGEST) with `algorithm`
    /// (`RSASSA_PKCS1_V1_5_SHA_256`, `ECDSA_SHA_256`): the signature bytes as KMS returns them.
    public func sign(_ message: [UInt8], algorithm: String) async throws(KMSError) -> [UInt8] {
        let object = try await call("Sign", body: signBody(message, algorithm: algorithm))
        guard let text = object["Signature"] as? String, let signature = Data(base64Encoded: text), !signature.isEmpty else {
            throw KMSError(.unavailable, code: nil, "KMS Sign answered without a Signature")
        }
        return Array(signature)
    }

    public func publicKey() async throws(KMSError) -> KMSPublicKey {
        let body = Array((try? JSONSerialization.data(withJSONObject: ["KeyId": keyID], options: [.withoutEscapingSlashes])) ?? Data())
        let object = try await call("GetPublicKey", body: body)
        guard let text = object["PublicKey"] as? String, let der = Data(base64Encoded: text) else {
            throw KMSError(.invalid, code: nil, "KMS GetPublicKey answered without a PublicKey")
        }
        // Every string here may reach a group refusal (heartbeat, logs): bounded like error text.
        let field = { (text: String) in KMSError.bounded(text, limit: KMSError.codeLimit) }
        return KMSPublicKey(
            der: Array(der), keyID: KMSError.bounded(object["KeyId"] as? String ?? keyID, limit: KMSError.messageLimit),
            keySpec: field(object["KeySpec"] as? String ?? object["CustomerMasterKeySpec"] as? String ?? "?"),
            keyUsage: field(object["KeyUsage"] as? String ?? "?"),
            signingAlgorithms: (object["SigningAlgorithms"] as? [String] ?? []).prefix(16).map(field))
    }
}
