/// A worker's heartbeat, the JSON object at `{NS}:worker:<id>` (PROTOCOL.md, "Heartbeat"): the
/// contract's fields plus `last_error` and a few extras.
///
/// One type for both sides, so the worker that writes it and the operator tools that read it
/// cannot drift apart. Every field is optional because a reader may meet a heartbeat written by
/// another version, by hand, or by someone hostile: `init(decoding:)` keeps what it can use and
/// turns anything else (a wrong type, a number out of range) into nil, never into a trap.
public struct Heartbeat: Sendable, Equatable {
    /// The last key group the worker refused (`keygroup_refusal`).
    public struct Refusal: Sendable, Equatable {
        /// The refused group's version, when it had a readable one.
        public var version: Int64?
        public var reason: String

        public init(version: Int64?, reason: String) {
            self.version = version
            self.reason = reason
        }

        /// `{"version": N or null, "reason": "..."}`, as the heartbeat carries it.
        public var jsonValue: JSONValue {
            .object([("version", version.map { .integer($0) } ?? .null), ("reason", .string(reason))])
        }
    }

    public var id: String?
    public var host: String?
    public var pid: Int64?
    /// Epoch milliseconds.
    public var startedAt: Int64?
    /// Epoch milliseconds of this write.
    public var seenAt: Int64?
    /// Jobs answered with `ok:true` since start.
    public var jobs: Int64?
    /// Jobs answered with `ok:false` since start.
    public var errors: Int64?
    /// Jobs sent to `{NS}:dead` since start.
    public var dead: Int64?
    /// The key-group version the worker signs with; nil before it has one.
    public var keyGroupVersion: Int64?
    public var keyGroupRefusal: Refusal?
    /// Why the worker's HSM or KMS key does not sign right now (`key_unavailable`); nil when it does.
    public var keyUnavailable: String?
    /// `"running"` or `"draining"`; kept as text so a reader shows a state it does not know.
    public var state: String?
    public var reconnects: Int64?
    public var lastError: String?
    public var clockSkewMilliseconds: Int64?
    /// Set when Redis may drop jobs silently (an evicting maxmemory-policy).
    public var redisWarning: String?
    /// Signature-cache counters; absent when the worker runs without a cache.
    public var cacheHits: Int64?
    public var cacheMisses: Int64?
    public var concurrency: Int64?
    public var batchSize: Int64?

    public init(
        id: String? = nil, host: String? = nil, pid: Int64? = nil, startedAt: Int64? = nil, seenAt: Int64? = nil,
        jobs: Int64? = nil, errors: Int64? = nil, dead: Int64? = nil, keyGroupVersion: Int64? = nil,
        keyGroupRefusal: Refusal? = nil, keyUnavailable: String? = nil, state: String? = nil, reconnects: Int64? = nil, lastError: String? = nil,
        clockSkewMilliseconds: Int64? = nil, redisWarning: String? = nil, cacheHits: Int64? = nil,
        cacheMisses: Int64? = nil, concurrency: Int64? = nil, batchSize: Int64? = nil
    ) {
        self.id = id
        self.host = host
        self.pid = pid
        self.startedAt = startedAt
        self.seenAt = seenAt
        self.jobs = jobs
        self.errors = errors
        self.dead = dead
        self.keyGroupVersion = keyGroupVersion
        self.keyGroupRefusal = keyGroupRefusal
        self.keyUnavailable = keyUnavailable
        self.state = state
        self.reconnects = reconnects
        self.lastError = lastError
        self.clockSkewMilliseconds = clockSkewMilliseconds
        self.redisWarning = redisWarning
        self.cacheHits = cacheHits
        self.cacheMisses = cacheMisses
        self.concurrency = concurrency
        self.batchSize = batchSize
    }

    // MARK: Writing

    /// The heartbeat as the worker stores it: compact JSON, fields in the contract's order. The
    /// fields the contract allows to be `null` (`keygroup_version`, `keygroup_refusal`,
    /// `key_unavailable`, `last_error`, `redis_warning`) are written as `null` when nil; any other
    /// nil field is left out.
    public var json: String {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        if let id { w.field("id", id) }
        if let host { w.field("host", host) }
        if let pid { w.field("pid", pid) }
        if let startedAt { w.field("started_at", startedAt) }
        if let seenAt { w.field("seen_at", seenAt) }
        if let jobs { w.field("jobs", jobs) }
        if let errors { w.field("errors", errors) }
        if let dead { w.field("dead", dead) }
        w.key("keygroup_version")
        if let keyGroupVersion { w.value(keyGroupVersion) } else { w.null() }
        w.key("keygroup_refusal")
        w.value(keyGroupRefusal?.jsonValue ?? .null)
        w.key("key_unavailable")
        if let keyUnavailable { w.value(keyUnavailable) } else { w.null() }
        if let state { w.field("state", state) }
        if let reconnects { w.field("reconnects", reconnects) }
        w.key("last_error")
        if let lastError { w.value(lastError) } else { w.null() }
        if let clockSkewMilliseconds { w.field("clock_skew_ms", clockSkewMilliseconds) }
        w.key("redis_warning")
        if let redisWarning { w.value(redisWarning) } else { w.null() }
        if let cacheHits { w.field("cache_hits", cacheHits) }
        if let cacheMisses { w.field("cache_misses", cacheMisses) }
        if let concurrency { w.field("concurrency", concurrency) }
        if let batchSize { w.field("batch_size", batchSize) }
        w.endObject()
        return w.string
    }

    // MARK: Reading

    /// Epoch milliseconds a heartbeat may name: up to the latest expiry a link may have, so the
    /// difference of two such times can never overflow.
    public static let timeRange: ClosedRange<Int64> = 0...(SigningLimits.latestExpiry * 1000)
    /// Process ids are `pid_t`.
    public static let pidRange: ClosedRange<Int64> = 0...Int64(Int32.max)
    /// A worker signs only with a group it loaded, and a loaded group's version is positive.
    public static let keyGroupVersionRange: ClosedRange<Int64> = 1...Int64.max
    /// Counters only grow from zero.
    public static let counterRange: ClosedRange<Int64> = 0...Int64.max

    /// Reads a heartbeat a worker (or anyone with write access to Redis) stored: what is not an
    /// object gives a heartbeat with no fields; a field of the wrong type or out of its range is
    /// nil. A refused group's `version` may be any integer (it is the version the refused document
    /// claimed, however wrong).
    public init(decoding value: JSONValue) {
        func integer(_ name: String, _ range: ClosedRange<Int64>) -> Int64? {
            guard case .integer(let n)? = value[member: name], range.contains(n) else { return nil }
            return n
        }
        func string(_ name: String) -> String? {
            guard case .string(let s)? = value[member: name] else { return nil }
            return s
        }
        var refusal: Refusal?
        if let r = value[member: "keygroup_refusal"], case .object = r, case .string(let reason)? = r[member: "reason"] {
            var version: Int64?
            if case .integer(let v)? = r[member: "version"] { version = v }
            refusal = Refusal(version: version, reason: reason)
        }
        self.init(
            id: string("id"), host: string("host"), pid: integer("pid", Self.pidRange),
            startedAt: integer("started_at", Self.timeRange), seenAt: integer("seen_at", Self.timeRange),
            jobs: integer("jobs", Self.counterRange), errors: integer("errors", Self.counterRange),
            dead: integer("dead", Self.counterRange), keyGroupVersion: integer("keygroup_version", Self.keyGroupVersionRange),
            keyGroupRefusal: refusal, keyUnavailable: string("key_unavailable"), state: string("state"), reconnects: integer("reconnects", Self.counterRange),
            lastError: string("last_error"), clockSkewMilliseconds: integer("clock_skew_ms", Int64.min...Int64.max),
            redisWarning: string("redis_warning"), cacheHits: integer("cache_hits", Self.counterRange),
            cacheMisses: integer("cache_misses", Self.counterRange), concurrency: integer("concurrency", 1...Int64.max),
            batchSize: integer("batch_size", 1...Int64.max))
    }

    /// The heartbeat in `bytes`, or nil when they are not JSON (a reader treats that worker as
    /// having no heartbeat).
    public init?(decoding bytes: some Collection<UInt8>) {
        guard let value = try? JSONReader.parse(bytes) else { return nil }
        self.init(decoding: value)
    }
}
