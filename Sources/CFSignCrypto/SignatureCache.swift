import CFSignSync
import CFSignCore
import Synchronization

/// A bounded LRU of signatures by (key-group version, key id, digest, policy bytes), so a link asked
/// for again is not signed again. With expiry rounding (`round_expiry`), repeated requests for one
/// object share a policy and so a signature, and get one identical, cacheable URL.
///
/// Keyed by the group version, never by key object identity: versions only grow, so a cached
/// signature can never be served for a different key that reuses an id or an address.
public final class SignatureCache: Sendable {
    public struct Key: Hashable, Sendable {
        let scope: Int64
        let keyID: String
        let hash: HashAlgorithm
        let policy: [UInt8]
        /// The hash of all of the above, computed once: a miss looks the key up, inserts it and
        /// evicts another, and hashing the policy bytes three times cost more than the lookups.
        let digest: Int

        public init(scope: Int64, keyID: String, hash: HashAlgorithm, policy: [UInt8]) {
            self.scope = scope
            self.keyID = keyID
            self.hash = hash
            self.policy = policy
            // The policy as one block of bytes: the synthesized `[UInt8]` hashing feeds the hasher
            // one byte at a time.
            var hasher = Hasher()
            hasher.combine(scope)
            hasher.combine(keyID)
            hasher.combine(hash)
            policy.withUnsafeBytes { hasher.combine(bytes: $0) }
            digest = hasher.finalize()
        }

        public func hash(into hasher: inout Hasher) { hasher.combine(digest) }

        public static func == (a: Key, b: Key) -> Bool {
            a.digest == b.digest && a.scope == b.scope && a.hash == b.hash && a.keyID == b.keyID && a.policy == b.policy
        }
    }

    public let capacity: Int
    private let lru: Locked<LRU>
    public let hits = Atomic<Int>(0)
    public let misses = Atomic<Int>(0)

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        self.lru = Locked(LRU(capacity: max(1, capacity)))
    }

    public func signature(for key: Key) -> [UInt8]? {
        let found = lru.withLock { $0.get(key) }
        if found != nil { hits.add(1, ordering: .relaxed) } else { misses.add(1, ordering: .relaxed) }
        return found
    }

    public func insert(_ signature: [UInt8], for key: Key) {
        lru.withLock { $0.put(key, signature) }
    }

    public var count: Int { lru.withLock { $0.index.count } }

    /// Doubly linked list over array slots; O(1) get, put and eviction.
    struct LRU {
        struct Node {
            var key: Key
            var value: [UInt8]
            var prev: Int
            var next: Int
        }
        let capacity: Int
        var nodes: [Node] = []
        var index: [Key: Int] = [:]
        var head = -1  // most recent
        var tail = -1  // least recent

        init(capacity: Int) { self.capacity = capacity }

        mutating func get(_ key: Key) -> [UInt8]? {
            guard let i = index[key] else { return nil }
            moveToFront(i)
            return nodes[i].value
        }

        mutating func put(_ key: Key, _ value: [UInt8]) {
            if let i = index[key] {
                nodes[i].value = value
                moveToFront(i)
                return
            }
            let slot: Int
            if nodes.count < capacity {
                nodes.append(Node(key: key, value: value, prev: -1, next: -1))
                slot = nodes.count - 1
            } else {
                slot = tail
                unlink(slot)
                index.removeValue(forKey: nodes[slot].key)
                nodes[slot] = Node(key: key, value: value, prev: -1, next: -1)
            }
            index[key] = slot
            pushFront(slot)
        }

        private mutating func unlink(_ i: Int) {
            let (p, n) = (nodes[i].prev, nodes[i].next)
            if p >= 0 { nodes[p].next = n } else { head = n }
            if n >= 0 { nodes[n].prev = p } else { tail = p }
            nodes[i].prev = -1
            nodes[i].next = -1
        }

        private mutating func pushFront(_ i: Int) {
            nodes[i].next = head
            nodes[i].prev = -1
            if head >= 0 { nodes[head].prev = i }
            head = i
            if tail < 0 { tail = i }
        }

        private mutating func moveToFront(_ i: Int) {
            guard head != i else { return }
            unlink(i)
            pushFront(i)
        }
    }
}
