/// Every Redis key and channel of one deployment, from one place (PROTOCOL.md, "Namespace and keys").
///
/// The namespace is wrapped in braces so it is a Redis Cluster hash tag: every key of a namespace
/// lives in one slot, and multi-key scripts stay legal on a cluster.
public struct Namespace: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    /// `{NS}:` — the prefix every key starts with.
    public let prefix: String

    public static let `default` = try! Namespace("cfsign")

    /// Names are 1–64 characters of `A-Z a-z 0-9 _ . -`; braces or `:` would break the hash tag
    /// or make keys of two namespaces overlap.
    public init(_ name: String) throws(InvalidNamespace) {
        guard !name.isEmpty, name.utf8.count <= 64,
              name.utf8.allSatisfy({ Namespace.allowed($0) })
        else {
            throw InvalidNamespace(name: name)
        }
        self.name = name
        self.prefix = "{\(name)}:"
    }

    private static func allowed(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2E || b == 0x2D
    }

    public var description: String { name }

    /// Pending jobs; producers LPUSH, workers take from the right.
    public var jobs: String { prefix + "jobs" }
    /// Jobs that could not be answered.
    public var dead: String { prefix + "dead" }
    /// Set of registered worker ids.
    public var workers: String { prefix + "workers" }
    /// The key group the fleet signs with.
    public var keyGroup: String { prefix + "keygroup" }
    /// Pub/sub channel announcing a new key group version.
    public var keyGroupChanged: String { prefix + "keygroup:changed" }
    /// Every `reply_to` must start with this.
    public var replyPrefix: String { prefix + "reply:" }
    /// A capped stream of signed and refused jobs (security issue; optional).
    public var audit: String { prefix + "audit" }
    /// A hash of how often each job (by SHA-1 of its bytes) was recovered from a dead worker's
    /// in-flight list, for poison-job detection (PROTOCOL.md, "Poison jobs").
    public var recoveries: String { prefix + "recoveries" }

    /// The list of jobs a worker has taken and not answered.
    public func inflight(worker id: String) -> String { prefix + "inflight:" + id }
    /// The heartbeat key of a worker.
    public func heartbeat(worker id: String) -> String { prefix + "worker:" + id }
    /// A reply list with the given suffix.
    public func reply(_ suffix: String) -> String { replyPrefix + suffix }
}

/// A namespace name that cannot be used.
public struct InvalidNamespace: Error, Sendable, CustomStringConvertible {
    public let name: String
    public var description: String {
        "namespace \"\(name)\" is not valid: use 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'"
    }
}
