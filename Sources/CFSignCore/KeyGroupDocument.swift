/// The key group as stored in `{NS}:keygroup` (PROTOCOL.md, "Key group and rotation"): its shape only.
///
/// Loading the keys it names is `CFSignCrypto`'s job; this type checks everything that can be checked
/// without touching a file, so the worker and `cfsign keygroup set` refuse the same documents.
public struct KeyGroupDocument: Sendable, Equatable {
    public enum KeySource: Sendable, Equatable {
        /// A path on the worker's host (a mounted secret).
        case file(String)
        /// The PEM text inline; accepted only by workers started with the explicit opt-in.
        case inlinePEM(String)
        /// `private_key_uri: "pkcs11:..."`: a key that never leaves an HSM token.
        case pkcs11(PKCS11URI)
        /// `private_key_uri: "awskms:..."`: a key that never leaves AWS KMS.
        case awsKMS(KMSKeyURI)
    }

    public struct Key: Sendable, Equatable {
        public let id: String
        public let source: KeySource
        /// The public key exactly as uploaded to CloudFront under `id`, if the operator gave it.
        public let publicKeyPEM: String?

        public init(id: String, source: KeySource, publicKeyPEM: String? = nil) {
            self.id = id
            self.source = source
            self.publicKeyPEM = publicKeyPEM
        }
    }

    public let version: Int64
    public let active: String

    /// The highest version: one below Int64.max, so the next version (`version + 1`, which
    /// `cfsign keygroup set` proposes) always exists.
    public static let maximumVersion: Int64 = .max - 1
    public let keys: [Key]

    /// Checks the shape: a positive version, valid and unique ids, one source per key, `active` among keys.
    public init(version: Int64, active: String, keys: [Key]) throws(KeyGroupError) {
        guard version >= 1, version <= Self.maximumVersion else {
            throw KeyGroupError("version must be a positive integer, not \(version); the highest is \(Self.maximumVersion), so a next one always exists")
        }
        guard !keys.isEmpty else { throw KeyGroupError("keys is empty; a group needs at least its active key") }
        var seen = Set<String>()
        for key in keys {
            guard KeyID.isValid(key.id) else { throw KeyGroupError("key id \"\(key.id)\" is not valid (\(KeyID.rule))") }
            guard seen.insert(key.id).inserted else { throw KeyGroupError("key id \"\(key.id)\" appears more than once") }
        }
        guard KeyID.isValid(active), keys.contains(where: { $0.id.utf8.elementsEqual(active.utf8) }) else {
            throw KeyGroupError("active key \"\(active)\" is not among keys (\(keys.map(\.id).joined(separator: ", ")))")
        }
        self.version = version
        self.active = active
        self.keys = keys
    }

    public func key(_ id: String) -> Key? { keys.first { $0.id == id } }

    /// Parses and checks the JSON document.
    public init(json bytes: some Collection<UInt8>) throws(KeyGroupError) {
        let value: JSONValue
        do throws(JSONObjectDocument.Failure) {
            value = try JSONObjectDocument(parsing: bytes).refusingDuplicates().value
        } catch {
            switch error {
            case .duplicate(let path):
                throw KeyGroupError("key group has field \"\(path)\" more than once; readers disagree on which one counts, so give it once")
            default: throw KeyGroupError("key group is \(error)")
            }
        }
        // Too long for 64 bits is out of range, not a different type: clamp, then the range check says so.
        guard let version = value[member: "version"]?.clampedInteger else {
            throw KeyGroupError("key group needs \"version\", a positive integer")
        }
        guard case .string(let active)? = value[member: "active"] else {
            throw KeyGroupError("key group needs \"active\", the id of the key to sign with")
        }
        guard case .array(let items)? = value[member: "keys"] else {
            throw KeyGroupError("key group needs \"keys\", an array of {\"id\", \"private_key_file\"} objects")
        }
        var keys: [Key] = []
        for (n, item) in items.enumerated() {
            guard case .object = item else { throw KeyGroupError("keys[\(n)] is \(item.typeName), not an object") }
            guard case .string(let id)? = item[member: "id"] else { throw KeyGroupError("keys[\(n)] needs \"id\", a string") }
            let file = try Self.optionalString(item[member: "private_key_file"], "key \"\(id)\": private_key_file")
            let pem = try Self.optionalString(item[member: "private_key_pem"], "key \"\(id)\": private_key_pem")
            let uri = try Self.optionalString(item[member: "private_key_uri"], "key \"\(id)\": private_key_uri")
            let given = [file.map { _ in "private_key_file" }, pem.map { _ in "private_key_pem" }, uri.map { _ in "private_key_uri" }].compactMap { $0 }
            guard given.count == 1 else {
                if given.isEmpty {
                    throw KeyGroupError("key \"\(id)\" needs private_key_file (a path on the worker's host), private_key_uri (pkcs11:...) or private_key_pem")
                }
                let which = given.count == 2 ? "both " + given.joined(separator: " and ") : given.joined(separator: ", ")
                throw KeyGroupError("key \"\(id)\" has \(which); give exactly one")
            }
            let source: KeySource
            if let path = file {
                guard !path.isEmpty else { throw KeyGroupError("key \"\(id)\": private_key_file is empty") }
                source = .file(path)
            } else if let text = pem {
                source = .inlinePEM(text)
            } else {
                source = try Self.keySource(uri: uri ?? "", id: id)
            }
            let publicPEM = try Self.optionalString(item[member: "public_key_pem"], "key \"\(id)\": public_key_pem")
            keys.append(Key(id: id, source: source, publicKeyPEM: publicPEM))
        }
        try self.init(version: version, active: active, keys: keys)
    }

    /// A `private_key_uri`, parsed here so a bad one is refused by `cfsign keygroup set` as by the worker.
    private static func keySource(uri: String, id: String) throws(KeyGroupError) -> KeySource {
        if uri.hasPrefix("pkcs11:") {
            do throws(KeyGroupError) {
                return .pkcs11(try PKCS11URI(parsing: uri))
            } catch {
                throw KeyGroupError("key \"\(id)\": private_key_uri \(error.reason)")
            }
        }
        if uri.hasPrefix("awskms:") {
            do throws(KeyGroupError) {
                return .awsKMS(try KMSKeyURI(parsing: uri))
            } catch {
                throw KeyGroupError("key \"\(id)\": private_key_uri \(error.reason)")
            }
        }
        throw KeyGroupError("key \"\(id)\": private_key_uri must start with pkcs11: (an RFC 7512 URI) or awskms: (an AWS KMS key ARN or id)")
    }

    /// A string member, absent or null as nil; any other type refused with `what` in the reason.
    private static func optionalString(_ value: JSONValue?, _ what: String) throws(KeyGroupError) -> String? {
        switch value {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case let other?: throw KeyGroupError("\(what) must be a string, not \(other.typeName)")
        }
    }

    /// Compact JSON in the contract's shape; `cfsign keygroup set/rotate` write this.
    public var json: [UInt8] {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.field("version", version)
        w.field("active", active)
        w.key("keys")
        w.beginArray()
        for key in keys {
            w.beginObject()
            w.field("id", key.id)
            switch key.source {
            case .file(let path): w.field("private_key_file", path)
            case .inlinePEM(let pem): w.field("private_key_pem", pem)
            case .pkcs11(let uri): w.field("private_key_uri", uri.text)
            case .awsKMS(let uri): w.field("private_key_uri", uri.text)
            }
            if let p = key.publicKeyPEM { w.field("public_key_pem", p) }
            w.endObject()
        }
        w.endArray()
        w.endObject()
        return w.bytes
    }
}

/// Why a key group is refused. The reason names the key id or field; it never holds key material.
public struct KeyGroupError: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
