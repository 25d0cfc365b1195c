import CFSignCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How strict loading a key group is; both relaxations are explicit operator choices.
public struct KeyLoadOptions: Sendable {
    /// Accept `private_key_pem` inline in the group (development and tests only).
    public var allowInlineKeys: Bool
    /// Accept key files readable or writable by group or others (mode & 077).
    public var allowGroupReadableKeyFiles: Bool

    /// At most this many PKCS#11 sessions per token (nil: as many as the token allows). For tests
    /// of a module that allows fewer sessions than there are signing lanes.
    public var pkcs11MaxSessions: Int?

    /// Seconds each AWS KMS call may take (`kms_call_timeout`).
    public var kmsCallTimeout: Double

    /// The PKCS#11 modules a `pkcs11:` key's `module-path` may name (`pkcs11_modules`); nil: any.
    /// The writer of the key group picks the module, and loading it runs its code here.
    public var pkcs11Modules: [String]?

    /// Loads `awskms:` keys; nil refuses them (this module links no HTTP client: the program that
    /// wants KMS keys passes `CFSignKMS.AWSKMSKeys()`).
    public var kms: (any KMSKeyLoader)?

    public init(allowInlineKeys: Bool = false, allowGroupReadableKeyFiles: Bool = false, pkcs11MaxSessions: Int? = nil, kmsCallTimeout: Double = 2,
                kms: (any KMSKeyLoader)? = nil) {
        self.allowInlineKeys = allowInlineKeys
        self.allowGroupReadableKeyFiles = allowGroupReadableKeyFiles
        self.pkcs11MaxSessions = pkcs11MaxSessions
        self.kmsCallTimeout = kmsCallTimeout
        self.kms = kms
        self.pkcs11Modules = nil
    }
}

/// Where `awskms:` keys come from, injected through `KeyLoadOptions.kms` by a module above this one
/// (CFSignKMS), so that CFSignCrypto and everything that only signs in process link no HTTPS stack.
public protocol KMSKeyLoader: Sendable {
    /// The key `uri` names, its public key fetched and checked; refusals name the AWS error.
    func load(_ uri: KMSKeyURI, callTimeout: Double) throws(KeyError) -> any SigningKey
    /// Releases the loader's process-wide resources (connections, event loop) at exit.
    func shutdown()
}

extension KeyLoadOptions {
    /// The permission check for key file `path`, given to `PrivateKey.load(file:checkMode:)` so it
    /// runs on the opened file's `fstat` (checking the path first, then opening it, could check one
    /// file and read another).
    func keyFileModeCheck(_ path: String) -> (mode_t) throws(KeyError) -> Void {
        let allowed = allowGroupReadableKeyFiles
        return { (mode) throws(KeyError) in
            if !allowed, mode & 0o077 != 0 {
                throw KeyError(source: path, reason: "has mode \(String(mode, radix: 8, uppercase: false).leftPadded(4)), readable or writable by group or others; chmod 600 it (or start the worker with allow_group_readable_keys)")
            }
        }
    }
}

/// A key group with every key loaded (parsed into memory, or found in its HSM token): loaded all or
/// nothing, then never changed. Callers see only `SigningKey`, wherever each key lives (a KMS key's
/// load asks KMS for its public key, so a wrong ARN or a missing permission refuses the group).
///
/// Workers swap a whole `SigningKeyGroup` in at once; a job holds the reference it started with, so a
/// rotation never changes a key mid-signature. When the last reference goes, the keys are freed
/// (OpenSSL clears private key memory on free; an HSM token's sessions close once no group uses it).
public final class SigningKeyGroup: Sendable {
    public let version: Int64
    public let activeID: String
    public let document: KeyGroupDocument
    private let keys: [String: any SigningKey]

    private init(document: KeyGroupDocument, keys: [String: any SigningKey]) {
        self.version = document.version
        self.activeID = document.active
        self.document = document
        self.keys = keys
    }

    /// The key a job signs with: `key_id` if given (it must be in the group), else the active key.
    public func key(for requested: String?) throws(SigningError) -> (id: String, key: any SigningKey) {
        let id = requested ?? activeID
        guard let key = keys[id] else {
            throw SigningError(.unknownKey, "key_id \"\(id)\" is not in key group version \(version) (keys: \(document.keys.map(\.id).joined(separator: ", ")))")
        }
        return (id, key)
    }

    public var keyIDs: [String] { document.keys.map(\.id) }

    /// Loads every key of `document`, or refuses the whole group with a reason naming the key.
    public static func load(_ document: KeyGroupDocument, options: KeyLoadOptions) throws(KeyGroupError) -> SigningKeyGroup {
        var keys: [String: any SigningKey] = [:]
        var loggedIn = Set<ObjectIdentifier>()
        for entry in document.keys {
            let key: any SigningKey
            do throws(KeyError) {
                key = try loadKey(entry.source, id: entry.id, options: options, loggedIn: &loggedIn)
                if let publicPEM = entry.publicKeyPEM {
                    let publicKey = try PublicKey(pem: Array(publicPEM.utf8), source: "public_key_pem of key \"\(entry.id)\"")
                    guard key.publicKey.matches(publicKey) else {
                        let held: String
                        switch key.location {
                        case .memory: held = "the file is mounted under the wrong id"
                        case .pkcs11: held = "the URI names another key in the token"
                        case .awsKMS: held = "the URI names another KMS key"
                        }
                        throw KeyError(source: "key \"\(entry.id)\"", reason: "private key does not match its public_key_pem; \(held), or the wrong public key was uploaded")
                    }
                }
            } catch {
                // Errors about the entry itself already name it; file errors name the file.
                let detail = error.source.hasPrefix("key \"") ? error.reason : error.description
                throw KeyGroupError("key \"\(entry.id)\": \(detail)")
            }
            keys[entry.id] = key
        }
        return SigningKeyGroup(document: document, keys: keys)
    }

    /// Loads one key from where the entry says it lives: the one place each kind of source is
    /// handled (the worker's groups, `cfsign sign`, `cfsign keys public`, the edge's public keys).
    ///
    /// `loggedIn` carries the tokens this load has logged in to, so one group logs in once per token.
    public static func loadKey(_ source: KeyGroupDocument.KeySource, id: String, options: KeyLoadOptions,
                               loggedIn: inout Set<ObjectIdentifier>) throws(KeyError) -> any SigningKey {
        switch source {
        case .file(let path):
            return try PrivateKey.load(file: path, checkMode: options.keyFileModeCheck(path))
        case .inlinePEM(let text):
            guard options.allowInlineKeys else {
                throw KeyError(source: "key \"\(id)\"", reason: "has private_key_pem inline, which this worker refuses; use private_key_file, or start the worker with --allow-inline-keys (development only)")
            }
            var bytes = Array(text.utf8)
            defer { bytes.wipe() }
            return try PrivateKey(pem: bytes, source: "inline key \"\(id)\"")
        case .pkcs11(let uri):
            do throws(KeyError) {
                return try loadPKCS11(uri, options: options, loggedIn: &loggedIn)
            } catch {
                throw KeyError(source: "private_key_uri \(error.source)", reason: error.reason)
            }
        case .awsKMS(let uri):
            do throws(KeyError) {
                guard let kms = options.kms else {
                    throw KeyError(source: uri.text, reason: "names an AWS KMS key, which this program cannot reach (it was built without CFSignKMS)")
                }
                return try kms.load(uri, callTimeout: options.kmsCallTimeout)
            } catch {
                throw KeyError(source: "private_key_uri \(error.source)", reason: error.reason)
            }
        }
    }

    /// One key on its own (outside a group load), e.g. for `cfsign keys public --uri`.
    public static func loadKey(_ source: KeyGroupDocument.KeySource, id: String, options: KeyLoadOptions) throws(KeyError) -> any SigningKey {
        var loggedIn = Set<ObjectIdentifier>()
        return try loadKey(source, id: id, options: options, loggedIn: &loggedIn)
    }

    /// The key a `pkcs11:` URI names, with its PIN read (and the PIN's buffer wiped) here.
    static func loadPKCS11(_ uri: PKCS11URI, options: KeyLoadOptions, loggedIn: inout Set<ObjectIdentifier>) throws(KeyError) -> any SigningKey {
        var pin: [UInt8]? = nil
        let pinSource: String
        switch uri.pin {
        case .file(let path)?:
            pinSource = "pin-source \(path)"
            var bytes: [UInt8]
            do throws(KeyError) {
                // The mode is checked on the opened file, as for key files.
                bytes = try readFile(path, what: "PIN", limit: 4096, checkMode: options.keyFileModeCheck(path))
            } catch {
                throw KeyError(source: pinSource, reason: error.reason)
            }
            // One line: a trailing newline (echo > file) is not part of the PIN.
            while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }
            pin = bytes
        case .value(let value)?:
            pinSource = "pin-value"
            guard options.allowInlineKeys else {
                throw KeyError(source: "pin-value", reason: "puts the PIN in the key group, which this worker refuses; use pin-source=file:/path, or start the worker with --allow-inline-keys (development only)")
            }
            pin = Array(value.utf8)
        case nil:
            pinSource = "pin-source"
        }
        defer { if pin != nil { pin!.wipe() } }
        return try PKCS11Key.load(uri, pin: pin, pinSource: pinSource, loggedIn: &loggedIn, maxSessions: options.pkcs11MaxSessions,
                                  allowedModules: options.pkcs11Modules)
    }
}

extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
