import CFSignCore

/// Where a key's private half lives; for logs, `keygroup show` and metrics, never for decisions.
public enum KeyLocation: Sendable, Equatable, CustomStringConvertible {
    /// Parsed into this process's memory (a file or inline PEM): OpenSSL signs.
    case memory
    /// In an HSM token: the module signs, the key never enters this process. The URI is the
    /// redacted form (no `pin-value`).
    case pkcs11(uri: String)

    public var description: String {
        switch self {
        case .memory: return "memory"
        case .pkcs11(let uri): return "pkcs11 (\(uri))"
        }
    }
}

/// A private key that can sign CloudFront policies, wherever it lives. `SigningKeyGroup`,
/// `LinkSigner`, the signature cache and the worker only ever see this protocol.
///
/// `sign` is synchronous and thread-safe: the worker calls it from several signing lanes at once
/// (threads of `DispatchQueue.concurrentPerform`), so each implementation brings its own
/// concurrency (OpenSSL: a context per call; PKCS#11: a session pool).
///
/// Failure contract: a refusal of the request itself (a digest the key cannot do) is
/// `.unsupportedHash`; a failure of the key's *holder* (token removed, logged out, KMS unreachable
/// or throttled) is `.keyUnavailable`, which the worker treats as "try again later", never as the
/// job's fault.
///
/// Adding an AWS KMS key (a later issue) needs no change to callers: a `KMSKey` class conforms to
/// this protocol, is built by `SigningKeyGroup.load` for a `private_key_uri: "awskms:..."` entry
/// (fetching `publicKey` with GetPublicKey at load time, so the group stays all-or-nothing), and
/// implements `sign` as one blocking HTTPS call bounded by `kms_call_timeout`: lanes are already
/// blocking threads, so an `async` signature would buy nothing here and would force every caller
/// to change. Its `signableHashes` leaves out SHA-1, and `location` gains a `.awsKMS(arn:)` case.
public protocol SigningKey: AnyObject, Sendable {
    var type: KeyType { get }
    /// The public half, as the holder reports it (checked against `public_key_pem` at load).
    var publicKey: PublicKey { get }
    var location: KeyLocation { get }
    /// The digests this key can sign with (a KMS key cannot do SHA-1).
    var signableHashes: Set<HashAlgorithm> { get }
    /// Signs `message` (the policy bytes): RSA PKCS#1 v1.5, or ECDSA as DER, over its `hash` digest.
    func sign(_ message: [UInt8], hash: HashAlgorithm) throws(SigningError) -> [UInt8]
}

extension PrivateKey: SigningKey {
    public var location: KeyLocation { .memory }
    public var signableHashes: Set<HashAlgorithm> { DigestSupport.signable }
}
