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

    public init(allowInlineKeys: Bool = false, allowGroupReadableKeyFiles: Bool = false) {
        self.allowInlineKeys = allowInlineKeys
        self.allowGroupReadableKeyFiles = allowGroupReadableKeyFiles
    }
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

/// A key group with every key parsed: loaded all or nothing, then never changed.
///
/// Workers swap a whole `SigningKeyGroup` in at once; a job holds the reference it started with, so a
/// rotation never changes a key mid-signature. When the last reference goes, the keys are freed
/// (OpenSSL clears private key memory on free).
public final class SigningKeyGroup: Sendable {
    public let version: Int64
    public let activeID: String
    public let document: KeyGroupDocument
    private let keys: [String: PrivateKey]

    private init(document: KeyGroupDocument, keys: [String: PrivateKey]) {
        self.version = document.version
        self.activeID = document.active
        self.document = document
        self.keys = keys
    }

    /// The key a job signs with: `key_id` if given (it must be in the group), else the active key.
    public func key(for requested: String?) throws(SigningError) -> (id: String, key: PrivateKey) {
        let id = requested ?? activeID
        guard let key = keys[id] else {
            throw SigningError(.unknownKey, "key_id \"\(id)\" is not in key group version \(version) (keys: \(document.keys.map(\.id).joined(separator: ", ")))")
        }
        return (id, key)
    }

    public var keyIDs: [String] { document.keys.map(\.id) }

    /// Loads every key of `document`, or refuses the whole group with a reason naming the key.
    public static func load(_ document: KeyGroupDocument, options: KeyLoadOptions) throws(KeyGroupError) -> SigningKeyGroup {
        var keys: [String: PrivateKey] = [:]
        for entry in document.keys {
            let key: PrivateKey
            do throws(KeyError) {
                switch entry.source {
                case .file(let path):
                    key = try PrivateKey.load(file: path, checkMode: options.keyFileModeCheck(path))
                case .inlinePEM(let text):
                    guard options.allowInlineKeys else {
                        throw KeyError(source: "key \"\(entry.id)\"", reason: "has private_key_pem inline, which this worker refuses; use private_key_file, or start the worker with --allow-inline-keys (development only)")
                    }
                    var bytes = Array(text.utf8)
                    defer { bytes.wipe() }
                    key = try PrivateKey(pem: bytes, source: "inline key \"\(entry.id)\"")
                }
                if let publicPEM = entry.publicKeyPEM {
                    let publicKey = try PublicKey(pem: Array(publicPEM.utf8), source: "public_key_pem of key \"\(entry.id)\"")
                    guard key.matches(publicKey) else {
                        throw KeyError(source: "key \"\(entry.id)\"", reason: "private key does not match its public_key_pem; the file is mounted under the wrong id, or the wrong public key was uploaded")
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
}

extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
