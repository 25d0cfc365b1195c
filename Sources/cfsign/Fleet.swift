import CFSignCore
import CFSignRedis

/// The fleet as Redis shows it: registered workers, their heartbeats, in-flight counts, queue lengths.
struct FleetSnapshot {
    struct WorkerView {
        let id: String
        /// nil when the heartbeat has expired (the worker is dead and not reaped yet).
        let heartbeat: JSONValue?
        let inflight: Int64

        var keyGroupVersion: Int64? {
            if case .integer(let v)? = heartbeat?[member: "keygroup_version"] { return v }
            return nil
        }

        func integer(_ name: String) -> Int64? {
            if case .integer(let v)? = heartbeat?[member: name] { return v }
            return nil
        }

        func string(_ name: String) -> String? {
            if case .string(let s)? = heartbeat?[member: name] { return s }
            return nil
        }

        var refusal: (version: Int64?, reason: String)? {
            guard case .object? = heartbeat?[member: "keygroup_refusal"], let r = heartbeat?[member: "keygroup_refusal"],
                  case .string(let reason)? = r[member: "reason"] else { return nil }
            if case .integer(let v)? = r[member: "version"] { return (v, reason) }
            return (nil, reason)
        }
    }

    let workers: [WorkerView]
    let queued: Int64
    let dead: Int64
    let keyGroup: [UInt8]?
    let redisTimeMilliseconds: Int64

    var live: [WorkerView] { workers.filter { $0.heartbeat != nil } }

    /// The versions live workers sign with (nil: no group yet).
    var versions: Set<Int64?> { Set(live.map(\.keyGroupVersion)) }

    static func read(_ connection: RedisConnection, _ ns: Namespace) throws(RedisError) -> FleetSnapshot {
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
            let hb = r[4 + 2 * n].bytes.flatMap { try? JSONReader.parse($0) }
            workers.append(WorkerView(id: id, heartbeat: hb, inflight: r[5 + 2 * n].integer ?? 0))
        }
        var time: Int64 = 0
        if let t = r[3].array, t.count == 2, let s = t[0].integer, let us = t[1].integer,
           (0...SigningLimits.latestExpiry).contains(s), (0..<1_000_000).contains(us) { time = s * 1000 + us / 1000 }
        return FleetSnapshot(workers: workers, queued: r[0].integer ?? 0, dead: r[1].integer ?? 0, keyGroup: r[2].bytes, redisTimeMilliseconds: time)
    }

    /// The version above `highestVersion`; nil when that is already Int64.max (a heartbeat or a
    /// stored group can say anything).
    var nextVersion: Int64? {
        let (next, overflow) = highestVersion.addingReportingOverflow(1)
        return overflow ? nil : next
    }

    /// Jobs in every worker's in-flight list (saturating: the counts come from Redis).
    var inflightTotal: Int64 { workers.reduce(0) { $0.addingSaturating($1.inflight) } }

    /// The stored group's version; nil when none is stored or it has no readable version.
    var storedVersion: Int64? {
        guard let bytes = keyGroup, let doc = try? JSONReader.parse(bytes), case .integer(let v)? = doc[member: "version"] else { return nil }
        return v
    }

    /// Why the fleet cannot sign with the stored group (CLI.md, `cfsign status`), or nil when at
    /// least one worker is live, every live worker signs with the stored version, and none reports
    /// a refusal.
    func problem(_ ns: Namespace) -> String? {
        if live.isEmpty { return "no live worker on namespace \(ns); start one with cfsign worker --namespace \(ns)" }
        if let refused = live.first(where: { $0.refusal != nil }), let r = refused.refusal {
            let others = live.filter { $0.refusal != nil }.count - 1
            return "worker \(refused.id) refused key-group version \(r.version.map(String.init) ?? "?"): \(r.reason)"
                + (others > 0 ? " (and \(others) more worker(s) report a refusal)" : "")
        }
        guard keyGroup != nil else {
            return "no key group stored in \(ns.keyGroup); an operator must store one (cfsign keygroup set)"
        }
        guard let stored = storedVersion else {
            return "the key group stored in \(ns.keyGroup) has no readable version; store a valid one (cfsign keygroup set)"
        }
        let behind = live.filter { $0.keyGroupVersion != stored }
        if let first = behind.first {
            return "\(behind.count) of \(live.count) live worker(s) do not sign with the stored key-group version \(stored) (\(first.id) signs with \(first.keyGroupVersion.map(String.init) ?? "none")); they may still be loading it, or refuse it"
        }
        return nil
    }

    /// The highest version anywhere: the stored group or any live heartbeat (the next must be above).
    var highestVersion: Int64 {
        var v: Int64 = storedVersion ?? 0
        for w in live {
            if let k = w.keyGroupVersion { v = max(v, k) }
            if let r = w.refusal, let rv = r.version { v = max(v, rv) }
        }
        return v
    }
}
