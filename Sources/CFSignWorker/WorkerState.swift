import CFSignSync
import CFSignCore
import CFSignCrypto
import Synchronization

/// What a worker's threads share: the key group in use, counters, and the stop flag.
///
/// The key group is one immutable reference behind a lock: a batch takes the reference once and
/// signs every job with it, so a rotation never changes a key under a running job.
final class WorkerState: Sendable {
    enum Phase: UInt8, AtomicRepresentable { case running = 0, draining = 1, stopped = 2 }

    struct Refusal: Sendable, Equatable {
        let version: Int64?
        let reason: String
    }

    private let group = Locked<SigningKeyGroup?>(nil)
    private let refusal = Locked<Refusal?>(nil)
    private let lastError = Locked<String?>(nil)
    /// Why the key's holder (an HSM token) is not signing now; nil while it signs. For readiness
    /// and the heartbeat's `key_unavailable`.
    private let keyUnavailable = Locked<String?>(nil)

    var keyUnavailableText: String? { keyUnavailable.withLock { $0 } }
    func setKeyUnavailable(_ reason: String?) { keyUnavailable.withLock { $0 = reason } }
    let phase = Atomic<Phase>(.running)
    let metrics = WorkerMetrics()
    /// Signatures by (group version, key, digest, policy); nil when `signature_cache_size` is 0.
    let cache: SignatureCache?

    /// The signing policy in use: set from the configuration at start and again when the config
    /// file changes it (`ConfigFileReloader`); read once per batch, like the key group.
    private let rules: Locked<SigningRules>

    var signingRules: SigningRules { rules.withLock { $0 } }
    func setSigningRules(_ new: SigningRules) { rules.withLock { $0 = new } }

    init(signatureCacheSize: Int, rules: SigningRules = SigningRules()) {
        cache = signatureCacheSize > 0 ? SignatureCache(capacity: signatureCacheSize) : nil
        self.rules = Locked(rules)
    }
    /// This worker's clock minus Redis's, in milliseconds, from the last heartbeat.
    let clockSkewMilliseconds = Atomic<Int>(0)
    /// Set when Redis may evict keys (maxmemory-policy other than noeviction), or cannot be asked.
    private let redisWarning = Locked<String?>(nil)

    var redisWarningText: String? { redisWarning.withLock { $0 } }
    func setRedisWarning(_ text: String?) { redisWarning.withLock { $0 = text } }

    let jobs = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let dead = Atomic<Int>(0)
    let reconnects = Atomic<Int>(0)
    /// Bumped when the Sentinels name another master (checked with each heartbeat): every
    /// connection opened before is dropped and opened again on the new master.
    let redisMasterEpoch = Atomic<Int>(0)
    /// Set while the fetch loop's connection is up, for the readiness check.
    let connected = Atomic<Bool>(false)

    var keyGroup: SigningKeyGroup? { group.withLock { $0 } }
    var keyGroupRefusal: Refusal? { refusal.withLock { $0 } }
    var lastErrorText: String? { lastError.withLock { $0 } }

    func swapIn(_ newGroup: SigningKeyGroup) {
        group.withLock { $0 = newGroup }
        refusal.withLock { $0 = nil }
        metrics.keyGroupVersion.record(newGroup.version)
        metrics.keyGroupRefused.record(0)
    }

    /// Records a refusal; returns false when it is the same as the last one (so it is logged once).
    func refuse(_ r: Refusal) -> Bool {
        let isNew = refusal.withLock { current in
            if current == r { return false }
            current = r
            return true
        }
        if isNew {
            metrics.keyGroupRefusals.increment()
            metrics.keyGroupRefused.record(1)
        }
        return isNew
    }

    /// Clears a recorded refusal; returns false when there was none.
    func clearRefusal() -> Bool {
        let had = refusal.withLock { r in
            defer { r = nil }
            return r != nil
        }
        if had { metrics.keyGroupRefused.record(0) }
        return had
    }

    func noteError(_ text: String) { lastError.withLock { $0 = text } }

    var isRunning: Bool { phase.load(ordering: .acquiring) == .running }
}
