import CFSignCore
import CFSignCrypto
import CFSignRedis

/// Stores a key group the way the contract asks (PROTOCOL.md, "Key group and rotation"): WATCH
/// `{NS}:keygroup`, check the new version against the stored group and every live heartbeat, then
/// SET it and PUBLISH the version on `{NS}:keygroup:changed` in one MULTI/EXEC.
///
/// Versions only grow: a worker keeps a group whose version it already has, so a new group must be
/// above everything a worker may hold or have refused. When another writer changes the key
/// between WATCH and EXEC the whole check runs again, a few times at most. A refusal writes nothing.
public struct KeyGroupStore {
    public let connection: RedisConnection
    public let namespace: Namespace
    /// Rounds of WATCH, read, check and EXEC before giving up on a key that keeps changing.
    public var attempts = 5

    public init(connection: RedisConnection, namespace: Namespace) {
        self.connection = connection
        self.namespace = namespace
    }

    /// What was stored.
    public struct Stored: Sendable {
        public let document: KeyGroupDocument
        /// Subscribers the PUBLISH reached (workers also poll the key, so 0 is not an error).
        public let subscribers: Int64
    }

    /// Stores the group `make` builds. `make` gets the next free version (above the stored group and
    /// every live heartbeat) and the stored group (nil when none is stored or it is unreadable), and
    /// may be called again when the key changed meanwhile. With `checking`, every key of the group
    /// is loaded here first, as a worker with those options would.
    public func store(
        checking options: KeyLoadOptions? = nil,
        _ make: (_ next: Int64, _ current: KeyGroupDocument?) throws(KeyGroupStoreError) -> KeyGroupDocument
    ) throws(KeyGroupStoreError) -> Stored {
        let ns = namespace
        for _ in 0..<attempts {
            let watched: RedisReply
            do { watched = try connection.command(["WATCH", ns.keyGroup]) } catch { throw .redis(.watching, error) }
            if let e = watched.errorMessage { throw .redisRefused(.watching, e) }
            do throws(KeyGroupStoreError) {
                let fleet: FleetSnapshot
                do { fleet = try FleetSnapshot.read(connection, ns) } catch { throw .redis(.readingFleet, error) }
                let current = fleet.keyGroup.flatMap { try? KeyGroupDocument(json: $0) }
                let highest = fleet.highestVersion
                guard let next = fleet.nextVersion else { throw .noVersionAbove(highest) }
                let document = try make(next, current)
                guard document.version > highest else {
                    throw .versionNotAbove(document.version, highest: highest, next: next)
                }
                if let options {
                    do { _ = try SigningKeyGroup.load(document, options: options) } catch { throw .keysRefused(error) }
                }
                let result: [RedisReply]?
                do {
                    result = try connection.transaction([
                        [Array("SET".utf8), Array(ns.keyGroup.utf8), document.json],
                        [Array("PUBLISH".utf8), Array(ns.keyGroupChanged.utf8), Array(String(document.version).utf8)],
                    ])
                } catch {
                    throw .redis(.storing, error)
                }
                guard let result else { continue }  // changed under us (EXEC discarded): read again
                return Stored(document: document, subscribers: result.count == 2 ? result[1].integer ?? 0 : 0)
            } catch {
                // A Redis failure may have left the connection unusable; anything else leaves the WATCH.
                if case .redis = error {} else { _ = try? connection.command(["UNWATCH"]) }
                throw error
            }
        }
        throw .keptChanging
    }

    /// Stores the group in `json` (a key-group document); a missing `"version"` becomes the next free one.
    public func set(json bytes: [UInt8], checking options: KeyLoadOptions? = nil) throws(KeyGroupStoreError) -> Stored {
        try store(checking: options) { next, _ throws(KeyGroupStoreError) in
            try Self.document(fromJSON: bytes, nextVersion: next)
        }
    }

    /// Makes `newKey` the active key of the next version, keeping at most `keep` keys of the stored
    /// group for `key_id` use (see `rotated`).
    public func rotate(to newKey: KeyGroupDocument.Key, keep: Int, checking options: KeyLoadOptions? = nil) throws(KeyGroupStoreError) -> Stored {
        try store(checking: options) { next, current throws(KeyGroupStoreError) in
            do throws(KeyGroupError) { return try Self.rotated(current, to: newKey, keep: keep, version: next) } catch { throw .invalidRotation(error) }
        }
    }

    /// The group after a rotation: `newKey` first and active, then the stored group's previous
    /// active key, then its other keys in their order, without `newKey`'s id and at most `keep` of
    /// them. The previous active key comes first because it is the one jobs still in flight or
    /// links about to be re-signed most likely name.
    public static func rotated(_ current: KeyGroupDocument?, to newKey: KeyGroupDocument.Key, keep: Int, version: Int64) throws(KeyGroupError) -> KeyGroupDocument {
        var keys = [newKey]
        if let current {
            let previous = [current.keys.first { $0.id == current.active }].compactMap { $0 } + current.keys.filter { $0.id != current.active }
            keys += previous.filter { $0.id != newKey.id }.prefix(max(0, keep))
        }
        return try KeyGroupDocument(version: version, active: newKey.id, keys: keys)
    }

    /// A group from a file's bytes; a missing `"version"` becomes `nextVersion`.
    public static func document(fromJSON bytes: [UInt8], nextVersion: Int64) throws(KeyGroupStoreError) -> KeyGroupDocument {
        var value: JSONValue
        do { value = try JSONReader.parse(bytes) } catch { throw .notJSON(error) }
        if case .object(var members) = value, !members.contains(where: { $0.0 == "version" }) {
            members.insert(("version", .integer(nextVersion)), at: 0)
            value = .object(members)
        }
        var w = JSONWriter()
        w.value(value)
        do { return try KeyGroupDocument(json: w.bytes) } catch { throw .invalidDocument(error) }
    }
}

/// Why `KeyGroupStore` wrote nothing.
public enum KeyGroupStoreError: Error, Sendable, CustomStringConvertible {
    /// The step a Redis failure happened in.
    public enum Step: String, Sendable {
        case watching = "WATCH"
        case readingFleet = "reading the fleet"
        case storing = "storing the key group"
    }

    /// The connection failed (or a read got an error reply) during `Step`.
    case redis(Step, RedisError)
    /// Redis answered `Step` with an error reply.
    case redisRefused(Step, String)
    /// The stored group or a live worker reports this version, and it is Int64.max.
    case noVersionAbove(Int64)
    /// The group's version is not above `highest` (the stored group's or a live worker's).
    case versionNotAbove(Int64, highest: Int64, next: Int64)
    /// The group given is not JSON.
    case notJSON(JSONSyntaxError)
    /// The group given is JSON but not a valid key group.
    case invalidDocument(KeyGroupError)
    /// The group a rotation builds is not valid (e.g. the new key's source).
    case invalidRotation(KeyGroupError)
    /// A key of the group did not load (`checking`).
    case keysRefused(KeyGroupError)
    /// Another writer changed the key in every attempt.
    case keptChanging

    public var description: String {
        switch self {
        case .redis(let step, let error): return "\(step.rawValue): \(error.message)"
        case .redisRefused(let step, let message): return "\(step.rawValue): Redis said \(message)"
        case .noVersionAbove(let v): return "the stored group or a live worker reports version \(v), and no version is higher"
        case .versionNotAbove(let v, let highest, let next): return "version \(v) is not higher than \(highest) (the stored group or a live worker's); use \(next)"
        case .notJSON(let error): return "\(error)"
        case .invalidDocument(let error): return "key group refused: \(error.reason)"
        case .invalidRotation(let error): return "the rotated group is not valid: \(error.reason)"
        case .keysRefused(let error): return "key group refused: \(error.reason)"
        case .keptChanging: return "the key group kept changing"
        }
    }
}
