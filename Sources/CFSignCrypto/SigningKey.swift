import CFSignCore

/// Where a key's private half lives; for logs, `keygroup show` and metrics, never for decisions.
public enum KeyLocation: Sendable, Equatable, CustomStringConvertible {
    /// Parsed into this process's memory (a file or inline PEM): OpenSSL signs.
    case memory
    /// In an HSM token: the module signs, the key never enters this process. The URI is the
    /// redacted form (no `pin-value`).
    case pkcs11(uri: String)
    /// In AWS KMS: every signature is a `Sign` call; `keyID` is the ARN or id the group names.
    case awsKMS(keyID: String)

    public var description: String {
        switch self {
        case .memory: return "memory"
        case .pkcs11(let uri): return "pkcs11 (\(uri))"
        case .awsKMS(let id): return "AWS KMS (\(id))"
        }
    }
}

/// A private key that can sign CloudFront policies, wherever it lives. `SigningKeyGroup`,
/// `LinkSigner`, the signature cache and the worker only ever see this protocol.
///
/// Two ways to sign, because the holders differ in kind:
/// - In process (memory, PKCS#11): `sign` is synchronous and thread-safe, a CPU-bound or local
///   call; the worker calls it from several signing lanes at once (threads of
///   `DispatchQueue.concurrentPerform`), so each implementation brings its own concurrency
///   (OpenSSL: a context per call; PKCS#11: a session pool).
/// - Remotely (AWS KMS): a key that is also a `RemoteSigningKey` signs with an `async` network
///   round trip (milliseconds). The worker issues those as Swift concurrency tasks on NIO's event
///   loop, many in flight at once, so they never occupy a signing lane or hold up the pipeline;
///   `remote` tells the two apart without a cast. Such a key's `sign` still works (it waits for the
///   call) for one-off callers such as `cfsign sign`, but never on a signing lane.
///
/// Failure contract: a refusal of the request itself (a digest the key cannot do) is
/// `.unsupportedHash`; a failure of the key's *holder* (token removed, logged out, KMS unreachable,
/// throttled, denied) is `.keyUnavailable`, which the worker treats as "try again later", never as
/// the job's fault.
public protocol SigningKey: AnyObject, Sendable {
    var type: KeyType { get }
    /// The public half, as the holder reports it (checked against `public_key_pem` at load).
    var publicKey: PublicKey { get }
    var location: KeyLocation { get }
    /// The digests this key can sign with (a KMS key cannot do SHA-1). A job naming no hash is
    /// signed SHA-256 when the worker's default is not among them.
    var signableHashes: Set<HashAlgorithm> { get }
    /// Signs `message` (the policy bytes): RSA PKCS#1 v1.5, or ECDSA as DER, over its `hash` digest.
    func sign(_ message: [UInt8], hash: HashAlgorithm) throws(SigningError) -> [UInt8]
    /// This key as a remote signer, or nil for one that signs in process (the default).
    var remote: (any RemoteSigningKey)? { get }
    /// The `unsupported_hash` message for a digest outside `signableHashes`.
    func cannotSign(_ hash: HashAlgorithm) -> String
}

/// A key whose holder signs over the network: `signRemotely` is the path the worker uses.
public protocol RemoteSigningKey: SigningKey {
    /// Same contract as `sign`, as one awaited call (bounded by the holder's own timeout).
    func signRemotely(_ message: [UInt8], hash: HashAlgorithm) async throws(SigningError) -> [UInt8]
}

extension SigningKey {
    public var remote: (any RemoteSigningKey)? { nil }
    public func cannotSign(_ hash: HashAlgorithm) -> String {
        let can = HashAlgorithm.allCases.filter { signableHashes.contains($0) }.map(\.rawValue)
        return "the key in \(location) cannot sign with \(hash.rawValue); send hash \(can.first ?? "SHA256")"
    }
}

extension PrivateKey: SigningKey {
    public var location: KeyLocation { .memory }
    public var signableHashes: Set<HashAlgorithm> { DigestSupport.signable }
}
