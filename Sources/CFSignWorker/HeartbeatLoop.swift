import CFSignCore
import CFSignRedis
import Dispatch
import Foundation
import Logging

/// The heartbeat thread: writes `{NS}:worker:<id>` with a TTL and keeps the id in `{NS}:workers`;
/// then reaps workers whose heartbeat has expired (moves their in-flight jobs back to the queue).
/// When the worker has drained, it deregisters.
final class HeartbeatLoop {
    private let configuration: WorkerConfiguration
    private let state: WorkerState
    private let logger: Logger
    private let keeper: ConnectionKeeper
    private let wake: DispatchSemaphore
    private let startedAt = JobProcessor.milliseconds()
    private let host = ProcessInfo.processInfo.hostName
    private let pid = Int(ProcessInfo.processInfo.processIdentifier)

    init(configuration: WorkerConfiguration, state: WorkerState, logger: Logger, wake: DispatchSemaphore) {
        self.configuration = configuration
        self.state = state
        self.logger = logger
        self.wake = wake
        self.keeper = ConnectionKeeper(role: "heartbeat", configuration: configuration, state: state, logger: logger)
    }

    /// Registers once before the first job is taken, so a crash right after taking one is recoverable.
    func register() -> Bool {
        checkSentinels()
        while let connection = keeper.connection(giveUp: { !state.isRunning }) {
            do throws(RedisError) {
                try checkEvictionPolicy(connection)
                try beat(connection)
                return true
            } catch {
                keeper.failed(error, doing: "registering")
            }
        }
        return false
    }

    /// Runs until `fetchDone` is signalled and the worker has deregistered.
    func run(fetchDone: @escaping @Sendable () -> Bool) {
        while true {
            _ = wake.wait(timeout: .now() + configuration.heartbeatInterval)
            if fetchDone() { break }
            checkSentinels()
            guard let connection = keeper.connection(giveUp: fetchDone) else { break }
            do throws(RedisError) {
                try beat(connection)
                try reap(connection)
            } catch {
                keeper.failed(error, doing: "writing the heartbeat")
            }
        }
        deregister()
    }

    private var sentinelMaster: RedisNode?

    /// With Sentinel: asks the Sentinels which node is the master; when that changes, bumps
    /// `redisMasterEpoch` so every thread reconnects. A killed master breaks the connections by
    /// itself; this catches a master that was demoted (SENTINEL FAILOVER) or cut off, whose
    /// connections still work, before Sentinel reconfigures it into a replica.
    private func checkSentinels() {
        guard configuration.redis.usesSentinel else { return }
        let timeout = min(configuration.connectTimeout, 2)
        guard let master = try? RedisConnection.sentinelMaster(of: configuration.redis, connectTimeout: timeout, commandTimeout: timeout) else { return }
        if let previous = sentinelMaster, previous != master {
            logger.notice("the Sentinels name a new master", metadata: ["previous": "\(previous)", "master": "\(master)"])
            state.redisMasterEpoch.add(1, ordering: .relaxed)
        }
        sentinelMaster = master
    }

    private var heartbeatKey: String { configuration.namespace.heartbeat(worker: configuration.workerID) }

    private func beat(_ connection: RedisConnection) throws(RedisError) {
        let ns = configuration.namespace
        try sample(connection)
        let replies = try connection.pipeline(strings: [
            ["SET", heartbeatKey, heartbeat().json, "PX", String(Int(configuration.heartbeatTTL * 1000))],
            ["SADD", ns.workers, configuration.workerID],
        ])
        if let e = replies.compactMap(\.errorMessage).first { keeper.serverError(e, doing: "writing the heartbeat") }
    }

    private var skewReported = false

    /// Queue gauges and the clock check, in one round trip: TIME is read between two local clock
    /// readings and compared with their midpoint, so the round trip does not count as skew.
    private func sample(_ connection: RedisConnection) throws(RedisError) {
        let ns = configuration.namespace
        let before = JobProcessor.milliseconds()
        let r = try connection.pipeline(strings: [["TIME"], ["LLEN", ns.jobs], ["LLEN", ns.inflight(worker: configuration.workerID)], ["LLEN", ns.dead]])
        let after = JobProcessor.milliseconds()
        let metrics = state.metrics
        if let n = r[1].integer { metrics.queueDepth.record(n) }
        if let n = r[2].integer { metrics.inflight.record(n) }
        if let n = r[3].integer { metrics.deadListLength.record(n) }
        // TIME's numbers come from Redis: bounded before any arithmetic, so nothing can trap.
        guard let t = r[0].array, t.count == 2, let s = t[0].integer, let us = t[1].integer,
              (0...SigningLimits.latestExpiry).contains(s), (0..<1_000_000).contains(us) else { return }
        let skew = before / 2 + after / 2 - (s * 1000 + us / 1000)
        state.clockSkewMilliseconds.store(Int(skew), ordering: .relaxed)
        metrics.clockSkew.record(Double(skew) / 1000)
        let over = Double(abs(skew)) / 1000 > configuration.clockSkewThreshold
        if over && !skewReported {
            logger.warning("this host's clock differs from Redis's; expires_in links will expire early or late by as much. Fix NTP on this host (or on Redis's)", metadata: ["skew_ms": "\(skew)", "threshold_s": "\(configuration.clockSkewThreshold)"])
        } else if !over && skewReported {
            logger.notice("clock back within the threshold of Redis's", metadata: ["skew_ms": "\(skew)"])
        }
        skewReported = over
    }

    /// An evicting Redis drops jobs silently: warn (log, heartbeat, metric) unless it is noeviction.
    private func checkEvictionPolicy(_ connection: RedisConnection) throws(RedisError) {
        let reply = try connection.command(["CONFIG", "GET", "maxmemory-policy"])
        let warning: String?
        if let e = reply.errorMessage {
            warning = "cannot read maxmemory-policy (\(e)); make sure Redis runs with noeviction"
        } else if let a = reply.array, a.count == 2, let policy = a[1].string {
            warning = policy == "noeviction" ? nil : "Redis maxmemory-policy is \(policy): under memory pressure it may evict queued jobs silently; set noeviction"
        } else {
            warning = nil
        }
        state.setRedisWarning(warning)
        state.metrics.redisEvicting.record(warning == nil ? 0 : 1)
        if let warning { logger.warning("\(warning)") }
    }

    /// The heartbeat as it is written now (PROTOCOL.md, "Heartbeat"): the contract's fields, plus
    /// `last_error` and a few extras.
    func heartbeat() -> Heartbeat {
        Heartbeat(
            id: configuration.workerID, host: host, pid: Int64(pid), startedAt: startedAt,
            seenAt: JobProcessor.milliseconds(),
            jobs: Int64(state.jobs.load(ordering: .relaxed)), errors: Int64(state.errors.load(ordering: .relaxed)),
            dead: Int64(state.dead.load(ordering: .relaxed)), keyGroupVersion: state.keyGroup?.version,
            keyGroupRefusal: state.keyGroupRefusal.map { Heartbeat.Refusal(version: $0.version, reason: $0.reason) },
            keyUnavailable: state.keyUnavailableText,
            state: state.isRunning ? "running" : "draining", reconnects: Int64(state.reconnects.load(ordering: .relaxed)),
            lastError: state.lastErrorText, clockSkewMilliseconds: Int64(state.clockSkewMilliseconds.load(ordering: .relaxed)),
            redisWarning: state.redisWarningText,
            cacheHits: state.cache.map { Int64($0.hits.load(ordering: .relaxed)) },
            cacheMisses: state.cache.map { Int64($0.misses.load(ordering: .relaxed)) },
            concurrency: Int64(configuration.concurrency), batchSize: Int64(configuration.batchSize))
    }

    /// Requeues the jobs of every registered worker whose heartbeat key has expired.
    private var beats = 0

    private func reap(_ connection: RedisConnection) throws(RedisError) {
        let ns = configuration.namespace
        guard let members = try connection.command(["SMEMBERS", ns.workers]).array?.compactMap(\.string) else { return }
        var others = members.filter { $0 != configuration.workerID }
        // Every 20 beats, also in-flight lists whose worker is not registered at all (a worker
        // reaped while it was only slow, then killed): nobody else would ever requeue them.
        beats += 1
        if beats % 20 == 1 { others += try orphanedWorkers(connection, registered: Set(members)) }
        if others.isEmpty { return }
        let exists = try connection.pipeline(strings: others.map { ["EXISTS", ns.heartbeat(worker: $0)] })
        let arguments = [String(configuration.maximumRecoveries), configuration.workerID, String(configuration.deadListLength)].map { Array($0.utf8) }
        for (id, e) in zip(others, exists) where e.integer == 0 {
            let keys = [ns.workers, ns.heartbeat(worker: id), ns.inflight(worker: id), ns.jobs, ns.dead, ns.recoveries].map { Array($0.utf8) }
            let reply = try connection.evaluate(Scripts.reap, keys: keys, arguments: [Array(id.utf8)] + arguments)
            if let counts = reply.array, counts.count == 2, let moved = counts[0].integer, let poisoned = counts[1].integer {
                logger.notice("reaped a worker whose heartbeat expired; its in-flight jobs are back on the queue", metadata: ["worker": "\(id)", "jobs": "\(moved)"])
                if poisoned > 0 {
                    state.dead.add(Int(clamping: poisoned), ordering: .relaxed)
                    state.metrics.dead[.poisonJob]?.increment(by: Int64(poisoned))
                    logger.warning("poison jobs: sent to the dead list instead of to another worker, after killing more than max_recoveries workers", metadata: ["worker": "\(id)", "jobs": "\(poisoned)", "max_recoveries": "\(configuration.maximumRecoveries)"])
                }
            } else if let e = reply.errorMessage {
                keeper.serverError(e, doing: "reaping worker \(id)")
            }
        }
    }

    /// Worker ids with an in-flight list but no registration (SCAN, so Redis is never blocked).
    private func orphanedWorkers(_ connection: RedisConnection, registered: Set<String>) throws(RedisError) -> [String] {
        let prefix = configuration.namespace.inflight(worker: "")
        var cursor = "0"
        var found: [String] = []
        repeat {
            let reply = try connection.command(["SCAN", cursor, "MATCH", prefix + "*", "COUNT", "200"])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else { return found }
            cursor = next
            for key in parts[1].array?.compactMap(\.string) ?? [] {
                let id = String(key.dropFirst(prefix.count))
                if id != configuration.workerID, !registered.contains(id) { found.append(id) }
            }
        } while cursor != "0" && found.count < 1000
        return found
    }

    /// After the drain: remove the registration, heartbeat and (empty) in-flight list. If jobs are
    /// still held (Redis was unreachable), delete only the heartbeat so another worker requeues them.
    private func deregister() {
        let ns = configuration.namespace
        let inflight = ns.inflight(worker: configuration.workerID)
        // Five tries in all, connects included: a stopping worker never waits forever for Redis.
        var attempts = 0
        while attempts < 5 {
            guard let connection = keeper.connection(giveUp: { attempts += 1; return attempts > 5 }) else { break }
            do throws(RedisError) {
                let held = try connection.command(["LLEN", inflight]).integer ?? 0
                if held == 0 {
                    _ = try connection.pipeline(strings: [["DEL", heartbeatKey, inflight], ["SREM", ns.workers, configuration.workerID]])
                    logger.info("deregistered", metadata: ["worker": "\(configuration.workerID)"])
                } else {
                    _ = try connection.command(["DEL", heartbeatKey])
                    logger.warning("left jobs in the in-flight list for another worker to requeue", metadata: ["jobs": "\(held)"])
                }
                return
            } catch {
                keeper.failed(error, doing: "deregistering")
            }
        }
        logger.error("could not deregister; the heartbeat expires and another worker requeues anything held")
    }
}
