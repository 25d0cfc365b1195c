import CFSignCore
import CFSignCrypto

/// A key that never leaves AWS KMS: each signature is one KMS `Sign` call (RSA_2048 with
/// `RSASSA_PKCS1_V1_5_SHA_256`, ECC_NIST_P256 with `ECDSA_SHA_256`), SHA-256 only. A remote
/// signer: the worker awaits `signRemotely` from Swift concurrency tasks, never on a signing lane.
///
/// The signatures are used as KMS returns them: PKCS#1 v1.5 bytes, and ECDSA already DER-encoded,
/// which is what CloudFront wants.
final class KMSKey: RemoteSigningKey {
    let client: KMSClient
    let type: KeyType
    let publicKey: PublicKey
    let location: KeyLocation
    let signableHashes: Set<HashAlgorithm> = [.sha256]
    let algorithm: String

    private init(client: KMSClient, type: KeyType, publicKey: PublicKey) {
        self.client = client
        self.type = type
        self.publicKey = publicKey
        self.location = .awsKMS(keyID: client.keyID)
        self.algorithm = type == .rsa2048 ? "RSASSA_PKCS1_V1_5_SHA_256" : "ECDSA_SHA_256"
    }

    var remote: (any RemoteSigningKey)? { self }

    func cannotSign(_ hash: HashAlgorithm) -> String { "KMS keys sign SHA-256 only; send hash SHA256" }

    func signRemotely(_ message: [UInt8], hash: HashAlgorithm) async throws(SigningError) -> [UInt8] {
        guard hash == .sha256 else { throw SigningError(.unsupportedHash, cannotSign(hash)) }
        let signature: [UInt8]
        do throws(KMSError) {
            signature = try await client.sign(message, algorithm: algorithm)
        } catch {
            throw SigningError(.keyUnavailable, "AWS KMS key \(client.keyID) did not sign: \(error.description)")
        }
        if type == .rsa2048, signature.count != 256 {
            throw SigningError(.keyUnavailable, "AWS KMS key \(client.keyID) returned a \(signature.count)-byte RSA signature, not 256")
        }
        return signature
    }

    /// For callers on a plain thread (`cfsign sign`); the worker uses `signRemotely`.
    func sign(_ message: [UInt8], hash: HashAlgorithm) throws(SigningError) -> [UInt8] {
        let result: Result<[UInt8], SigningError>
        do throws(KMSError) {
            result = try Blocking.run { () async throws(KMSError) -> Result<[UInt8], SigningError> in
                do throws(SigningError) {
                    return .success(try await self.signRemotely(message, hash: hash))
                } catch {
                    return .failure(error)
                }
            }
        } catch {
            throw SigningError(.keyUnavailable, "AWS KMS key \(client.keyID) did not sign: \(error.description)")
        }
        return try result.get()
    }

    /// Asks KMS for the key's public key and checks it can sign CloudFront links: a wrong ARN,
    /// missing permission, unreachable KMS or unsuitable key refuses the group with the AWS code.
    static func load(_ uri: KMSKeyURI, callTimeout: Double) throws(KeyError) -> KMSKey {
        let source = uri.text
        let client: KMSClient
        let info: KMSPublicKey
        do throws(KMSError) {
            client = try KMSClient(keyID: uri.keyID, timeout: .milliseconds(Int64(callTimeout * 1000)))
            info = try Blocking.run { () async throws(KMSError) -> KMSPublicKey in try await client.publicKey() }
        } catch {
            throw KeyError(source: source, reason: "KMS GetPublicKey failed: \(error.description)")
        }
        let type: KeyType
        switch info.keySpec {
        case "RSA_2048": type = .rsa2048
        case "ECC_NIST_P256": type = .ecP256
        default:
            throw KeyError(source: source, reason: "is a KMS key of spec \(info.keySpec); CloudFront accepts RSA_2048 and ECC_NIST_P256 keys only")
        }
        guard info.keyUsage == "SIGN_VERIFY" else {
            throw KeyError(source: source, reason: "is a KMS key with KeyUsage \(info.keyUsage); create it with KeyUsage SIGN_VERIFY")
        }
        let publicKey = try PublicKey(der: info.der, source: "\(source) (GetPublicKey)")
        guard publicKey.type == type else {
            throw KeyError(source: source, reason: "GetPublicKey returned a \(publicKey.type.rawValue) key for key spec \(info.keySpec)")
        }
        let key = KMSKey(client: client, type: type, publicKey: publicKey)
        if !info.signingAlgorithms.isEmpty, !info.signingAlgorithms.contains(key.algorithm) {
            throw KeyError(source: source, reason: "KMS offers \(info.signingAlgorithms.joined(separator: ", ")) for this key, not \(key.algorithm)")
        }
        return key
    }
}

/// How programs that link this module hand `awskms:` keys to key-group loads (`KeyLoadOptions.kms`):
/// CFSignCrypto itself links no HTTP client, so the worker library and the fuzz build do not either.
public struct AWSKMSKeys: KMSKeyLoader {
    public init() {}

    public func load(_ uri: KMSKeyURI, callTimeout: Double) throws(KeyError) -> any SigningKey {
        try KMSKey.load(uri, callTimeout: callTimeout)
    }

    /// Closes KMS connections at exit; a no-op when no KMS key was ever loaded.
    public func shutdown() { KMSHTTP.shutdownIfStarted() }
}
