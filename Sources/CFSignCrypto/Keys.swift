internal import CCFSignOpenSSL
import CFSignCore
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The key types CloudFront accepts for trusted key groups.
public enum KeyType: String, Sendable, CaseIterable {
    case rsa2048 = "RSA-2048"
    case ecP256 = "EC P-256"
}

/// Why a key cannot be used. `source` names the file (or "inline key \"ID\""); never key material.
public struct KeyError: Error, Sendable, Equatable, CustomStringConvertible {
    public let source: String
    public let reason: String
    public init(source: String, reason: String) {
        self.source = source
        self.reason = reason
    }
    public var description: String { "\(source): \(reason)" }
}

/// A digest fetched once from the default provider (implicit fetches take locks in OpenSSL 3).
final class Digest: @unchecked Sendable {
    // Immutable after init; EVP_MD objects are safe to share across threads.
    let md: OpaquePointer

    private init?(name: String) {
        guard let md = EVP_MD_fetch(nil, name, nil) else { OpenSSL.clearErrors(); return nil }
        self.md = md
    }

    deinit { EVP_MD_free(md) }

    static let sha1 = Digest(name: "SHA1")
    static let sha256 = Digest(name: "SHA256")

    static func `for`(_ hash: HashAlgorithm) -> Digest? {
        switch hash {
        case .sha1: return sha1
        case .sha256: return sha256
        }
    }
}

/// A parsed private key: RSA-2048 or EC P-256, immutable and shared by every signing thread.
///
/// OpenSSL allows one `EVP_PKEY` to be used by many threads at once as long as each signature has its
/// own context (openssl-threads(7)); `sign` makes one per call and never mutates the key.
public final class PrivateKey: @unchecked Sendable {
    let pkey: OpaquePointer
    public let type: KeyType
    /// One initialised signing context per digest, made once and only ever copied from: with
    /// OpenSSL 3, `EVP_DigestSignInit` fetches algorithms and takes global locks on every call,
    /// while `EVP_MD_CTX_copy_ex` from a ready context does neither (measured: it roughly halves
    /// the non-signature work per EC job).
    private let templates: [HashAlgorithm: SigningTemplate]

    init(taking pkey: OpaquePointer, type: KeyType) {
        self.pkey = pkey
        self.type = type
        var templates: [HashAlgorithm: SigningTemplate] = [:]
        for hash in HashAlgorithm.allCases {
            if let digest = Digest.for(hash), let t = SigningTemplate(pkey: pkey, digest: digest) { templates[hash] = t }
        }
        self.templates = templates
    }

    deinit { EVP_PKEY_free(pkey) }

    /// Loads a private key file. The file's bytes are wiped from memory once parsed.
    public static func load(file path: String) throws(KeyError) -> PrivateKey {
        try load(file: path, checkMode: { _ in })
    }

    /// Loads a private key file whose permission bits (as the opened file has them) `checkMode` accepts.
    static func load(file path: String, checkMode: (mode_t) throws(KeyError) -> Void) throws(KeyError) -> PrivateKey {
        var bytes = try readFile(path, what: "private key", checkMode: checkMode)
        defer { bytes.wipe() }
        return try PrivateKey(pem: bytes, source: path)
    }

    /// Parses PEM text (PKCS#1, SEC1 or PKCS#8, unencrypted). `source` names it in errors.
    public convenience init(pem bytes: [UInt8], source: String) throws(KeyError) {
        // Header checks on the bytes themselves: a String copy of a private key could not be wiped.
        func has(_ marker: String) -> Bool { bytes.containsSequence(Array(marker.utf8)) }
        if !has("-----BEGIN ") {
            throw KeyError(source: source, reason: "is not a PEM key (no -----BEGIN line); cfsign reads PEM private keys (PKCS#1, SEC1 or PKCS#8)")
        }
        if has("-----BEGIN ENCRYPTED PRIVATE KEY-----") || has("Proc-Type: 4,ENCRYPTED") {
            throw KeyError(source: source, reason: "is an encrypted private key; give the key unencrypted (e.g. openssl pkey -in KEY -out PLAIN) and protect the file with its mode (0600) instead")
        }
        let hasPrivate = has("PRIVATE KEY-----")
        if !hasPrivate, has("-----BEGIN PUBLIC KEY-----") || has("-----BEGIN RSA PUBLIC KEY-----") {
            throw KeyError(source: source, reason: "is a public key; signing needs the private key (the public key is what you upload to CloudFront)")
        }
        if !hasPrivate, has("-----BEGIN CERTIFICATE-----") {
            throw KeyError(source: source, reason: "is a certificate; signing needs the private key")
        }
        OpenSSL.clearErrors()
        let parsed = OpenSSL.withReadBIO(bytes) { bio in PEM_read_bio_PrivateKey(bio, nil, refusePassword, nil) }
        guard let pkey = parsed ?? nil else {
            let detail = OpenSSL.takeError()
            throw KeyError(source: source, reason: "is not a readable private key (\(detail))")
        }
        do {
            let type = try Self.classify(pkey, source: source)
            self.init(taking: pkey, type: type)
        } catch {
            EVP_PKEY_free(pkey)
            throw error
        }
    }

    /// RSA-2048 or EC P-256, or a reason naming what it is instead.
    static func classify(_ pkey: OpaquePointer, source: String) throws(KeyError) -> KeyType {
        let id = EVP_PKEY_get_base_id(pkey)
        if id == NID_rsaEncryption {
            let bits = EVP_PKEY_get_bits(pkey)
            guard bits == 2048 else {
                throw KeyError(source: source, reason: "is an RSA-\(bits) key; CloudFront accepts RSA-2048 and EC P-256 keys only")
            }
            return .rsa2048
        }
        if id == NID_X9_62_id_ecPublicKey {
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            _ = EVP_PKEY_get_group_name(pkey, &name, name.count, &length)
            let curve = name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            guard curve == "prime256v1" || curve == "P-256" else {
                throw KeyError(source: source, reason: "is an EC key on curve \(curve.isEmpty ? "unknown" : curve); CloudFront accepts EC keys on P-256 (prime256v1) only")
            }
            return .ecP256
        }
        let name = EVP_PKEY_get0_type_name(pkey).map { String(cString: $0) } ?? "unknown"
        throw KeyError(source: source, reason: "is \(article(name)) \(name) key; CloudFront accepts RSA-2048 and EC P-256 keys only")
    }

    /// "a" or "an" before a key type read letter by letter (an ED25519, an X448, a DSA, a DH).
    static func article(_ name: String) -> String {
        guard let first = name.uppercased().first else { return "a" }
        return "AEFHILMNORSX".contains(first) ? "an" : "a"
    }

    /// Signs `message` (the policy bytes): RSA PKCS#1 v1.5 or ECDSA (DER) over the digest.
    public func sign(_ message: [UInt8], hash: HashAlgorithm) throws(SigningError) -> [UInt8] {
        guard let digest = Digest.for(hash) else {
            throw SigningError(.unsupportedHash, "this OpenSSL build has no \(hash.rawValue) digest")
        }
        guard let ctx = EVP_MD_CTX_new() else { throw SigningError(.internal, "out of memory creating a signing context") }
        defer { EVP_MD_CTX_free(ctx) }
        if let template = templates[hash], EVP_MD_CTX_copy_ex(ctx, template.ctx) == 1 {
            // Ready: a private copy of the initialised context.
        } else {
            OpenSSL.clearErrors()
            guard EVP_DigestSignInit(ctx, nil, digest.md, nil, pkey) == 1 else {
                let detail = OpenSSL.takeError()
                throw SigningError(.unsupportedHash, "OpenSSL refuses to sign with \(hash.rawValue) (\(detail))")
            }
        }
        var length = Int(EVP_PKEY_get_size(pkey))
        var signature = [UInt8](repeating: 0, count: length)
        let ok = message.withUnsafeBufferPointer { m in
            EVP_DigestSign(ctx, &signature, &length, m.baseAddress, m.count)
        }
        guard ok == 1 else {
            let detail = OpenSSL.takeError()
            throw SigningError(.internal, "signing failed (\(detail))")
        }
        if length < signature.count { signature.removeSubrange(length...) }
        return signature
    }

    /// The public half, as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), the form CloudFront takes.
    public var publicKeyPEM: String {
        let bytes = OpenSSL.writeToBIO { bio in PEM_write_bio_PUBKEY(bio, pkey) == 1 } ?? []
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The private key as unencrypted PKCS#8 PEM; only `cfsign keys generate` writes it (to a 0600 file).
    public func privateKeyPEM() -> [UInt8] {
        OpenSSL.writeToBIO { bio in PEM_write_bio_PrivateKey(bio, pkey, nil, nil, 0, nil, nil) == 1 } ?? []
    }

    /// True when `publicKey` is this key's pair.
    public func matches(_ publicKey: PublicKey) -> Bool {
        EVP_PKEY_eq(pkey, publicKey.pkey) == 1
    }

    /// The public half as a `PublicKey` (through DER: OpenSSL has no public-only copy call).
    public var publicKey: PublicKey {
        var der: UnsafeMutablePointer<UInt8>? = nil
        let n = i2d_PUBKEY(pkey, &der)
        guard n > 0, let der else { fatalError("OpenSSL could not encode a loaded key's public half") }
        defer { CRYPTO_free(der, #file, #line) }
        let bytes = Array(UnsafeBufferPointer(start: der, count: Int(n)))
        guard let key = try? PublicKey(der: bytes, source: "public key") else { fatalError("OpenSSL could not read back a public key it wrote") }
        return key
    }

    /// A new key of the given type from OpenSSL's default random source.
    public static func generate(_ type: KeyType) throws(KeyError) -> PrivateKey {
        let name = type == .rsa2048 ? "RSA" : "EC"
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, name, nil) else {
            throw KeyError(source: "key generation", reason: OpenSSL.takeError())
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        var ok = EVP_PKEY_keygen_init(ctx) == 1
        switch type {
        case .rsa2048: ok = ok && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) == 1
        case .ecP256: ok = ok && EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1
        }
        var pkey: OpaquePointer? = nil
        ok = ok && EVP_PKEY_generate(ctx, &pkey) == 1
        guard ok, let pkey else { throw KeyError(source: "key generation", reason: OpenSSL.takeError()) }
        return PrivateKey(taking: pkey, type: type)
    }
}

/// An `EVP_MD_CTX` initialised for signing with one key and digest; never used directly, only
/// copied (each signature gets its own copy, as openssl-threads(7) requires).
final class SigningTemplate: @unchecked Sendable {
    // Immutable after init: only read by EVP_MD_CTX_copy_ex.
    let ctx: OpaquePointer

    init?(pkey: OpaquePointer, digest: Digest) {
        guard let ctx = EVP_MD_CTX_new() else { return nil }
        guard EVP_DigestSignInit(ctx, nil, digest.md, nil, pkey) == 1 else {
            EVP_MD_CTX_free(ctx)
            OpenSSL.clearErrors()
            return nil
        }
        self.ctx = ctx
    }

    deinit { EVP_MD_CTX_free(ctx) }
}

/// A parsed public key (SPKI PEM), for checking a key group's pairs and verifying signatures.
public final class PublicKey: @unchecked Sendable {
    // Immutable after init; verification makes its own context per call.
    let pkey: OpaquePointer
    public let type: KeyType

    deinit { EVP_PKEY_free(pkey) }

    public static func load(file path: String) throws(KeyError) -> PublicKey {
        try PublicKey(pem: readFile(path, what: "public key"), source: path)
    }

    public convenience init(pem bytes: [UInt8], source: String) throws(KeyError) {
        let text = String(decoding: bytes.prefix(64 * 1024), as: UTF8.self)
        if text.contains("PRIVATE KEY-----") && !text.contains("-----BEGIN PUBLIC KEY-----") {
            throw KeyError(source: source, reason: "is a private key; give the public key (cfsign keys generate writes it beside the private key)")
        }
        guard text.contains("-----BEGIN PUBLIC KEY-----") else {
            throw KeyError(source: source, reason: "is not a PEM public key (-----BEGIN PUBLIC KEY-----), the form CloudFront takes")
        }
        OpenSSL.clearErrors()
        let parsed = OpenSSL.withReadBIO(bytes) { bio in PEM_read_bio_PUBKEY(bio, nil, refusePassword, nil) }
        guard let pkey = parsed ?? nil else {
            throw KeyError(source: source, reason: "is not a readable public key (\(OpenSSL.takeError()))")
        }
        try self.init(adopting: pkey, source: source)
    }

    /// Takes ownership of a parsed key: kept when it is a type cfsign signs with, freed otherwise.
    private init(adopting pkey: OpaquePointer, source: String) throws(KeyError) {
        do {
            self.type = try PrivateKey.classify(pkey, source: source)
        } catch {
            EVP_PKEY_free(pkey)
            throw error
        }
        self.pkey = pkey
    }

    /// Parses a DER SubjectPublicKeyInfo (what a PKCS#11 key's numbers are turned into).
    package convenience init(der bytes: [UInt8], source: String) throws(KeyError) {
        OpenSSL.clearErrors()
        let parsed = bytes.withUnsafeBufferPointer { b -> OpaquePointer? in
            var p: UnsafePointer<UInt8>? = b.baseAddress
            return d2i_PUBKEY(nil, &p, b.count)
        }
        guard let pkey = parsed else {
            throw KeyError(source: source, reason: "has a public key OpenSSL cannot read (\(OpenSSL.takeError()))")
        }
        try self.init(adopting: pkey, source: source)
    }

    /// True when both are the same public key.
    public func matches(_ other: PublicKey) -> Bool { EVP_PKEY_eq(pkey, other.pkey) == 1 }

    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`), the form CloudFront takes.
    public var pem: String {
        let bytes = OpenSSL.writeToBIO { bio in PEM_write_bio_PUBKEY(bio, pkey) == 1 } ?? []
        return String(decoding: bytes, as: UTF8.self)
    }

    /// True when `signature` is a valid signature of `message` under this key with `hash`.
    public func verify(signature: [UInt8], message: [UInt8], hash: HashAlgorithm) -> Bool {
        guard let digest = Digest.for(hash), let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx); OpenSSL.clearErrors() }
        guard EVP_DigestVerifyInit(ctx, nil, digest.md, nil, pkey) == 1 else { return false }
        let result = signature.withUnsafeBufferPointer { s in
            message.withUnsafeBufferPointer { m in
                EVP_DigestVerify(ctx, s.baseAddress, s.count, m.baseAddress, m.count)
            }
        }
        return result == 1
    }
}

/// Which digests this OpenSSL build will sign with. Hardened or FIPS builds may refuse SHA-1.
public enum DigestSupport {
    /// Probes by signing a few bytes with a throwaway P-256 key and each digest; computed once.
    public static let signable: Set<HashAlgorithm> = {
        guard let key = try? PrivateKey.generate(.ecP256) else { return [] }
        var set = Set<HashAlgorithm>()
        for hash in HashAlgorithm.allCases where (try? key.sign(Array("cfsign probe".utf8), hash: hash)) != nil {
            set.insert(hash)
        }
        return set
    }()

    public static var openSSLVersion: String { OpenSSL.versionText }
}

extension Array where Element == UInt8 {
    /// True when `needle` occurs in the array (naive search; key files are a few KiB).
    func containsSequence(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return needle.isEmpty }
        let first = needle[0]
        var i = 0
        while i <= count - needle.count {
            if self[i] == first, self[i..<(i + needle.count)].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }
}

/// Reads a whole file, with errors that name it; refuses anything that is not a regular file or is huge.
///
/// Every check is made on the opened descriptor (`fstat`), so the file checked is the file read even
/// if the path is replaced meanwhile. `checkMode` gets the permission bits first, before the type
/// and size checks.
func readFile(_ path: String, what: String, limit: Int = 1 << 20, checkMode: (mode_t) throws(KeyError) -> Void = { _ in }) throws(KeyError) -> [UInt8] {
    func failure(_ error: any Error) -> KeyError {
        let reason = (error as? Errno)?.description ?? "\(error)"
        return KeyError(source: path, reason: "cannot read the \(what) file (\(reason))")
    }
    // O_NONBLOCK: opening a FIFO (or a device) blocks until a writer appears; with it, open returns at
    // once and the regular-file check below refuses it. It changes nothing for reading a regular file.
    let fd: FileDescriptor
    do { fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec, .nonBlocking]) } catch { throw failure(error) }
    defer { try? fd.close() }
    let status: Stat
    do { status = try fd.stat() } catch { throw KeyError(source: path, reason: "is not a regular file") }
    try checkMode(mode_t(status.permissions.rawValue))
    guard status.type == .regular else { throw KeyError(source: path, reason: "is not a regular file") }
    guard status.size <= Int64(limit) else {
        throw KeyError(source: path, reason: "is \(status.size) bytes; a \(what) file is a few kilobytes")
    }
    var bytes = [UInt8](repeating: 0, count: Int(status.size))
    var offset = 0
    while offset < bytes.count {
        let n: Int
        do { n = try bytes.withUnsafeMutableBytes { try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[offset...])) } } catch {
            throw failure(error)
        }
        guard n > 0 else {
            throw KeyError(source: path, reason: "cannot read the \(what) file (it ended after \(offset) of \(bytes.count) bytes)")
        }
        offset += n
    }
    return bytes
}
