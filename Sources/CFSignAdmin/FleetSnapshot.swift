import CFSignCore
import CFSignRedis

/// The fleet as Redis shows it at one moment: registered workers, their heartbeats, in-flight
/// counts, queue lengths and the stored key group, read in one pipelined round trip.
///
/// Everything here came from Redis, so nothing is trusted: heartbeats are decoded tolerantly
/// (`Heartbeat(decoding:)`) and version arithmetic cannot overflow.
public struct FleetSnapshot: Sendable {
    public struct WorkerView: Sendable {
        public let id: String
        /// The heartbeat exactly as stored, for callers that show it whole; nil when it has expired
        /// (the worker is dead and not reaped yet) or is not JSON.
        public let document: JSONValue?
        /// The same heartbeat, decoded; nil exactly when `document` is.
        public let heartbeat: Heartbeat?
        /// Length of the worker's in-flight list.
        public let inflight: Int64

        public init(id: String, document: JSONValue?, inflight: Int64) {
            self.id = id
            self.document = document
            self.heartbeat = document.map(Heartbeat.init(decoding:))
            self.inflight = inflight
        }

        public var isLive: Bool { heartbeat != nil }
        public var keyGroupVersion: Int64? { heartbeat?.keyGroupVersion }
        public var refusal: Heartbeat.Refusal? { heartbeat?.keyGroupRefusal }
    }

    /// Why the fleet cannot sign with the stored group (CLI.md, `cfsign status`), most urgent first.
    public enum Problem: Sendable, Equatable {
        /// No registered worker has a live heartbeat.
        case noLiveWorker
        /// `worker` reports it refused a group; `others` more live workers report a refusal too.
        case refusal(worker: String, Heartbeat.Refusal, others: Int)
        /// `{NS}:keygroup` does not exist.
        case noKeyGroup
        /// `{NS}:keygroup` exists but has no integer `version`.
        case unreadableStoredVersion
        /// `behind` of `live` workers do not report the stored version; `first` is one of them.
        case behind(Int, of: Int, stored: Int64, first: String, firstVersion: Int64?)
    }

    public let workers: [WorkerView]
    public let queued: Int64
    public let dead: Int64
    /// The bytes of `{NS}:keygroup`, nil when none is stored.
    public let keyGroup: [UInt8]?
    /// Redis's clock (TIME) in epoch milliseconds; 0 when its reply was unusable.
    public let redisTimeMilliseconds: Int64

    public init(workers: [WorkerView], queued: Int64, dead: Int64, keyGroup: [UInt8]?, redisTimeMilliseconds: Int64) {
        self.workers = workers
        self.queued = queued
        self.dead = dead
        self.keyGroup = keyGroup
        self.redisTimeMilliseconds = redisTimeMilliseconds
    }

    /// Reads the fleet of namespace `ns`; a server error reply to any of the reads is thrown.
    public static func read(_ connection: RedisConnection, _ ns: Namespace) throws(RedisError) -> FleetSnapshot {
        let ids = (try connection.command(["SMEMBERS", ns.workers]).array ?? []).compactMap(\.string).sorted()
        var commands: [[String]] = [["LLEN", ns.jobs], ["LLEN", ns.dead], ["GET", ns.keyGroup], ["TIME"]]
        for id in ids {
            commands.append(["GET", ns.heartbeat(worker: id)])
            commands.append(["LLEN", ns.inflight(worker: id)])
        }
        let r = try connection.pipeline(strings: commands)
        if let e = r.compactMap(\.errorMessage).first { throw RedisError(.server, e) }
        var workers: [WorkerView] = []
        for (n, id) in ids.enumerated() {
            let document = r[4 + 2 * n].bytes.flatMap { try? JSONReader.parse($0) }
            workers.append(WorkerView(id: id, document: document, inflight: r[5 + 2 * n].integer ?? 0))
        }
        var time: Int64 = 0
        // TIME's numbers are bounded before any arithmetic, so a strange reply cannot trap.
        if let t = r[3].array, t.count == 2, let s = t[0].integer, let us = t[1].integer,
           (0...SigningLimits.latestExpiry).contains(s), (0..<1_000_000).contains(us) { time = s * 1000 + us / 1000 }
        return FleetSnapshot(workers: workers, queued: r[0].integer ?? 0, dead: r[1].integer ?? 0, keyGroup: r[2].bytes, redisTimeMilliseconds: time)
    }

    public var live: [WorkerView] { workers.filter(\.isLive) }

    /// The versions live workers sign with (nil: no group yet).
    public var versions: Set<Int64?> { Set(live.map(\.keyGroupVersion)) }

    /// Jobs in every worker's in-flight list (saturating: the counts come from Redis).
    public var inflightTotal: Int64 { workers.reduce(0) { $0.addingSaturating($1.inflight) } }

    /// The stored group's version; nil when none is stored or it has no readable version.
    public var storedVersion: Int64? {
        guard let bytes = keyGroup, let doc = try? JSONReader.parse(bytes), case .integer(let v)? = doc[member: "version"] else { return nil }
        return v
    }

    /// The highest version anywhere: the stored group or any live heartbeat, refused versions
    /// included (the next version must be above all of them, or a worker could mistake a new
    /// group for one it already has or refused).
    public var highestVersion: Int64 {
        var v: Int64 = storedVersion ?? 0
        for w in live {
            if let k = w.keyGroupVersion { v = max(v, k) }
            if let r = w.refusal, let rv = r.version { v = max(v, rv) }
        }
        return v
    }

    /// The version above `highestVersion`; nil when that is already Int64.max (a heartbeat or a
    /// stored group can say anything).
    public var nextVersion: Int64? {
        let (next, overflow) = highestVersion.addingReportingOverflow(1)
        return overflow ? nil : next
    }

    /// Why the fleet cannot sign with the stored group, or nil when at least one worker is live,
    /// every live worker signs with the stored version, and none reports a refusal.
    public var problem: Problem? {
        let live = self.live
        if live.isEmpty { return .noLiveWorker }
        let refusing = live.filter { $0.refusal != nil }
        if let first = refusing.first, let r = first.refusal {
            return .refusal(worker: first.id, r, others: refusing.count - 1)
        }
        guard keyGroup != nil else { return .noKeyGroup }
        guard let stored = storedVersion else { return .unreadableStoredVersion }
        let behind = live.filter { $0.keyGroupVersion != stored }
        if let first = behind.first {
            return .behind(behind.count, of: live.count, stored: stored, first: first.id, firstVersion: first.keyGroupVersion)
        }
        return nil
    }

    /// The stored group as JSON with every inline private key replaced by a note (nil when none is
    /// stored or it is not JSON): what an operator tool may print, since output lands in logs and tickets.
    public var redactedKeyGroup: JSONValue? {
        keyGroup.flatMap { try? JSONReader.parse($0) }.map(Self.redacted)
    }

    /// `group` with each key's `private_key_pem` string replaced by its length.
    public static func redacted(_ group: JSONValue) -> JSONValue {
        guard case .object(var members) = group, let i = members.firstIndex(where: { $0.0 == "keys" }),
              case .array(let keys) = members[i].1 else { return group }
        members[i].1 = .array(keys.map { key in
            guard case .object(let fields) = key else { return key }
            return .object(fields.map { name, value in
                if name == "private_key_pem", case .string(let pem) = value { return (name, .string("<inline private key, \(pem.utf8.count) bytes, not shown>")) }
                return (name, value)
            })
        })
        return .object(members)
    }
}
