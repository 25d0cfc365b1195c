import CFSignCore
import CFSignCrypto
import CFSignRedis
import Foundation
import Logging
import Synchronization

/// The worker's pipeline: take → sign → reply, each stage on its own thread, handing batches on
/// through bounded queues. Taking the next batch and answering the last one overlap with signing,
/// so the cores sign while Redis round trips are in flight; the queues bound what a worker holds.
final class Pipeline: Sendable {
    let toSign = Handoff<TakenBatch>(capacity: 1)
    let toReply = Handoff<[Outcome]>(capacity: 2)
    /// Jobs taken and not yet answered (or given up on); the take stage reads its in-flight list
    /// for lost jobs only when this is zero, so it never re-reads jobs the pipeline still holds.
    let held = Atomic<Int>(0)
    /// Set by the reply stage when it gives up on jobs: the take stage then recovers them.
    let recoveryRequested = Atomic<Bool>(false)

    /// The sign stage: parse, validate and sign each batch on the Dispatch pool.
    static func sign(_ pipeline: Pipeline, processor: JobProcessor, state: WorkerState, keyUnavailableAfter: Double) {
        while let batch = pipeline.toSign.take() {
            let group = state.keyGroup
            let refusal = group == nil ? state.keyGroupRefusal.map { "version \($0.version.map(String.init) ?? "?"): \($0.reason)" } : nil
            var outcomes = processor.process(batch: batch.jobs, group: group, refusal: refusal)
            retryUnavailable(&outcomes, batch.jobs, processor: processor, state: state, for: keyUnavailableAfter)
            for excerpt in batch.deadInRedis { outcomes.append(processor.oversized(excerpt)) }
            pipeline.toReply.put(outcomes)
        }
        pipeline.toReply.close()
    }

    /// Jobs whose key's holder did not sign (`key_unavailable`: an HSM token removed or logged
    /// out) are not answered yet: they stay in this worker's in-flight list and are signed again
    /// with backoff, with the group in use at each try (a rotation away from the HSM rescues them),
    /// until they sign or `limit` seconds have passed; only then are they answered `key_unavailable`.
    /// Meanwhile readiness and the heartbeat say the key is unavailable. Holding the sign stage is
    /// deliberate: the next batch would need the same key.
    static func retryUnavailable(_ outcomes: inout [Outcome], _ jobs: [[UInt8]], processor: JobProcessor, state: WorkerState, for limit: Double) {
        var pending = jobs.indices.filter { outcomes[$0].error == .keyUnavailable }
        guard !pending.isEmpty else {
            if state.keyUnavailableText != nil, !outcomes.isEmpty { state.setKeyUnavailable(nil) }
            return
        }
        let start = Date()
        var delay = 0.05
        while !pending.isEmpty, Date().timeIntervalSince(start) < limit, state.phase.load(ordering: .relaxed) != .stopped {
            state.setKeyUnavailable(Self.reason(outcomes[pending[0]]))
            Thread.sleep(forTimeInterval: min(delay, max(0, limit - Date().timeIntervalSince(start))))
            delay = min(delay * 2, 1)
            let group = state.keyGroup
            let retried = processor.process(batch: pending.map { jobs[$0] }, group: group)
            for (n, i) in pending.enumerated() { outcomes[i] = retried[n] }
            pending = pending.filter { outcomes[$0].error == .keyUnavailable }
        }
        if pending.isEmpty { state.setKeyUnavailable(nil) }
    }

    /// The message of a failed outcome, for the readiness detail (no key material: a CKR_ name).
    private static func reason(_ outcome: Outcome) -> String {
        guard case .reply(_, let payload) = outcome.kind, let reply = try? JSONReader.parse(payload),
              case .string(let message)? = reply[member: "error"]?[member: "message"] else { return "the key's holder does not sign" }
        return message
    }
}

/// What one take hands to the sign stage: jobs to sign, and jobs the take script already sent to
/// the dead list because they were too large (only counted and audited downstream).
struct TakenBatch: Sendable {
    var jobs: [[UInt8]] = []
    var deadInRedis: [OversizedJob] = []
    var isEmpty: Bool { jobs.isEmpty && deadInRedis.isEmpty }
    /// Outcomes this batch will produce (what the pipeline holds until they are answered).
    var count: Int { jobs.count + deadInRedis.count }
}

/// A job over 64 KiB that the take script moved to `{NS}:dead`: its length and first KiB.
struct OversizedJob: Sendable {
    let length: Int64
    let excerpt: [UInt8]
}

/// The take stage: move batches of jobs atomically from the queue into this worker's in-flight list.
/// Stops taking when the worker drains; what it took is still signed and answered downstream.
final class TakeLoop {
    private let configuration: WorkerConfiguration
    private let state: WorkerState
    private let pipeline: Pipeline
    private let logger: Logger
    private let keeper: ConnectionKeeper
    private let jobsKey: [UInt8]
    private let inflightKey: [UInt8]
    private let workersKey: [UInt8]
    private let workerID: [UInt8]
    private let deadKey: [UInt8]
    private let recoveriesKey: [UInt8]
    /// Set at start and after every failed round trip: the in-flight list may hold jobs this loop
    /// does not know it took (see `held`), so it is read before anything new is taken.
    private var recoverHeld = true

    init(configuration: WorkerConfiguration, state: WorkerState, pipeline: Pipeline, logger: Logger) {
        self.configuration = configuration
        self.state = state
        self.pipeline = pipeline
        self.logger = logger
        let ns = configuration.namespace
        self.keeper = ConnectionKeeper(role: "take", configuration: configuration, state: state, logger: logger)
        self.jobsKey = Array(ns.jobs.utf8)
        self.workersKey = Array(ns.workers.utf8)
        self.workerID = Array(configuration.workerID.utf8)
        self.inflightKey = Array(ns.inflight(worker: configuration.workerID).utf8)
        self.deadKey = Array(ns.dead.utf8)
        self.recoveriesKey = Array(ns.recoveries.utf8)
    }

    func run() {
        while state.isRunning {
            guard let connection = keeper.connection(giveUp: { !state.isRunning }) else { break }
            state.connected.store(true, ordering: .relaxed)
            do throws(RedisError) {
                if pipeline.recoveryRequested.exchange(false, ordering: .acquiringAndReleasing) { recoverHeld = true }
                var batch = TakenBatch()
                if recoverHeld {
                    // Only once the pipeline holds nothing: then every in-flight job is a lost one.
                    if pipeline.held.load(ordering: .acquiring) > 0 {
                        Thread.sleep(forTimeInterval: 0.01)
                        continue
                    }
                    batch.jobs = try held(connection)
                    recoverHeld = false
                } else {
                    batch = try take(connection)
                }
                if batch.isEmpty { continue }
                state.metrics.batchSize.record(batch.jobs.count)
                pipeline.held.add(batch.count, ordering: .releasing)
                pipeline.toSign.put(batch)
            } catch {
                state.connected.store(false, ordering: .relaxed)  // readiness: lost until reconnected
                recoverHeld = true
                keeper.failed(error, doing: "taking jobs")
            }
        }
        keeper.close()
        pipeline.toSign.close()
    }

    /// Jobs in this worker's in-flight list that the loop holds no outcome for: a take (script or
    /// BLMOVE) that ran on Redis but whose reply was lost with the connection, or jobs left by an
    /// earlier process with the same worker id. While this worker's heartbeat lives no reaper
    /// requeues them, so without this they would wait until the worker stops. Oldest first.
    private func held(_ connection: RedisConnection) throws(RedisError) -> [[UInt8]] {
        let reply = try connection.command(bytes: [Array("LRANGE".utf8), inflightKey, Array("0".utf8), Array("-1".utf8)])
        // An error reply (e.g. LOADING after a restart) must not end the recovery: throwing keeps
        // `recoverHeld` set, so the list is read again once Redis answers.
        if let e = reply.errorMessage { throw RedisError(.server, "reading the in-flight list: \(e)") }
        let items = Array((reply.array?.compactMap(\.bytes) ?? []).reversed())
        if !items.isEmpty {
            logger.notice("answering jobs found in this worker's in-flight list (taken on a lost connection, or by an earlier process with this id)", metadata: ["jobs": "\(items.count)"])
        }
        return items
    }

    /// Up to `batch_size` jobs, moved atomically into the in-flight list; blocks a few seconds at most.
    /// A job over 64 KiB is dead-lettered inside Redis by the take script (see `Scripts.take`): the
    /// worker holds at most one oversized element, the one BLMOVE hands over whole, and drops it.
    private func take(_ connection: RedisConnection) throws(RedisError) -> TakenBatch {
        var batch = try takeScript(connection, count: configuration.batchSize, afterBlockingMove: false)
        if !batch.isEmpty { return batch }
        let reply = try connection.command(bytes: [Array("BLMOVE".utf8), jobsKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8), Array(String(configuration.blockTimeout).utf8)])
        if let e = reply.errorMessage { keeper.serverError(e, doing: "BLMOVE"); return batch }
        guard let first = reply.bytes else { return batch }
        let oversized = first.count > JobParser.maximumSize
        if configuration.batchSize == 1 && !oversized { return TakenBatch(jobs: [first]) }
        // The script looks at the element BLMOVE delivered (the in-flight list's head): it dead-letters
        // it when oversized, and takes nothing more when it is a suspect (taken alone).
        batch = try takeScript(connection, count: configuration.batchSize - 1, afterBlockingMove: true)
        if !oversized { batch.jobs.insert(first, at: 0) }
        return batch
    }

    private func takeScript(_ connection: RedisConnection, count: Int, afterBlockingMove: Bool) throws(RedisError) -> TakenBatch {
        let reply = try connection.evaluate(
            Scripts.take, keys: [jobsKey, inflightKey, workersKey, deadKey, recoveriesKey],
            arguments: [Array(String(count).utf8), workerID, Array(String(JobParser.maximumSize).utf8),
                        Array(String(configuration.deadListLength).utf8), afterBlockingMove ? [0x31] : [0x30],
                        Array(String(Scripts.takeByteBudget).utf8)])
        var batch = TakenBatch()
        if let e = reply.errorMessage { keeper.serverError(e, doing: "taking jobs"); return batch }
        for element in reply.array ?? [] {
            if let job = element.bytes {
                batch.jobs.append(job)
            } else if let pair = element.array, pair.count == 2, let length = pair[0].integer {
                batch.deadInRedis.append(OversizedJob(length: length, excerpt: pair[1].bytes ?? []))
            }
        }
        return batch
    }

}

/// The reply stage: answer each signed batch in one pipelined round trip on its own connection;
/// a lost connection is re-opened and the same replies are sent again (the reply script answers
/// each job at most once). A draining worker leaves only when everything it took is answered.
final class ReplyLoop {
    private let configuration: WorkerConfiguration
    private let state: WorkerState
    private let pipeline: Pipeline
    private let logger: Logger
    private let keeper: ConnectionKeeper
    private let inflightKey: [UInt8]
    private let deadKey: [UInt8]
    private let recoveriesKey: [UInt8]
    private let ledger: OutcomeLedger

    init(configuration: WorkerConfiguration, state: WorkerState, pipeline: Pipeline, logger: Logger) {
        self.configuration = configuration
        self.state = state
        self.pipeline = pipeline
        self.logger = logger
        let ns = configuration.namespace
        self.keeper = ConnectionKeeper(role: "reply", configuration: configuration, state: state, logger: logger)
        self.inflightKey = Array(ns.inflight(worker: configuration.workerID).utf8)
        self.deadKey = Array(ns.dead.utf8)
        self.recoveriesKey = Array(ns.recoveries.utf8)
        self.ledger = OutcomeLedger(state: state, logger: logger)
    }

    func run() {
        while let outcomes = pipeline.toReply.take() {
            var pending = outcomes
            var attempts = 0
            // After a round trip lost with its connection, Redis may already have run those reply
            // scripts: a resend then finds the jobs gone ("0"). They were most likely answered by
            // that lost attempt, so they are counted and audited then (a rare double count beats
            // a missing audit entry).
            var resent = false
            while !pending.isEmpty {
                guard let connection = keeper.connection(giveUp: { false }) else { break }
                do throws(RedisError) {
                    attempts += 1
                    pending = try deliver(pending, connection, attempt: attempts, resent: resent)
                } catch {
                    resent = true
                    keeper.failed(error, doing: "answering jobs")
                }
            }
            pipeline.held.add(-outcomes.count, ordering: .releasing)
        }
        keeper.close()
    }

    /// Answers a batch in one round trip; returns the outcomes that must be tried again.
    private func deliver(_ outcomes: [Outcome], _ connection: RedisConnection, attempt: Int, resent: Bool) throws(RedisError) -> [Outcome] {
        let ttl = Array(String(configuration.replyTTL).utf8)
        let maxDead = Array(String(configuration.deadListLength).utf8)
        var calls: [RedisScriptCall] = []
        calls.reserveCapacity(outcomes.count)
        for o in outcomes {
            switch o.kind {
            case .reply(let replyTo, let payload):
                calls.append(RedisScriptCall(script: Scripts.reply, keys: [inflightKey, Array(replyTo.utf8), recoveriesKey], arguments: [o.raw, payload, ttl]))
            case .dead(let entry):
                calls.append(RedisScriptCall(script: Scripts.dead, keys: [inflightKey, deadKey, recoveriesKey], arguments: [o.raw, entry, maxDead]))
            case .deadInRedis:
                continue
            }
        }
        var replies = try connection.evaluate(calls).makeIterator()
        var failed: [Outcome] = []
        var redirected: [Outcome] = []
        var answered: [Outcome] = []
        for o in outcomes {
            let r: RedisReply
            if case .deadInRedis = o.kind { r = .integer(1) } else if let next = replies.next() { r = next } else { break }
            if let e = r.errorMessage {
                failed.append(o)
                state.noteError("answering a job: \(e)")
                continue
            }
            switch r.integer {
            case 1:
                ledger.answered(o)
                answered.append(o)
            case -2: redirected.append(deadInstead(o))
            case 0 where resent:  // probably answered by the lost attempt
                ledger.answered(o)
                answered.append(o)
            default:
                // 0: no longer ours (this worker stalled past its heartbeat and the job was requeued);
                // whoever holds it now answers it. Counted, so a fleet that keeps stalling shows.
                ledger.stale()
            }
        }
        audit(answered, connection)
        if !failed.isEmpty {
            if attempt >= 10 {
                logger.error("giving up answering jobs after 10 attempts; they stay in this worker's in-flight list and are taken again", metadata: ["jobs": "\(failed.count)", "error": "\(state.lastErrorText ?? "")"])
                pipeline.recoveryRequested.store(true, ordering: .releasing)
                return redirected
            }
            keeper.serverError(state.lastErrorText ?? "error reply", doing: "answering jobs")
        }
        return failed + redirected
    }

    /// Appends answered jobs to the audit trail: a capped stream (XADD MAXLEN ~) or log lines.
    /// Best effort: an audit failure is logged and never holds up replies.
    private func audit(_ answered: [Outcome], _ connection: RedisConnection) {
        let records = answered.compactMap(\.audit)
        guard !records.isEmpty else { return }
        switch configuration.audit {
        case .off: return
        case .log:
            for r in records {
                logger.info("audit", metadata: Logger.Metadata(uniqueKeysWithValues: r.fields.map { ($0.0, Logger.MetadataValue.string($0.1)) }))
            }
        case .stream:
            let key = Array(configuration.namespace.audit.utf8)
            let length = Array(String(configuration.auditStreamLength).utf8)
            let now = Array(String(JobProcessor.milliseconds()).utf8)
            let commands: [[[UInt8]]] = records.map { r in
                [Array("XADD".utf8), key, Array("MAXLEN".utf8), Array("~".utf8), length, Array("*".utf8), Array("at".utf8), now]
                    + r.fields.flatMap { [Array($0.0.utf8), Array($0.1.utf8)] }
            }
            do {
                let replies = try connection.pipeline(commands)
                if let e = replies.compactMap(\.errorMessage).first { state.noteError("audit: \(e)") }
            } catch {
                state.noteError("audit: \(error.message)")
            }
        }
    }

    /// A job whose `reply_to` holds something other than a list cannot be answered there.
    private func deadInstead(_ o: Outcome) -> Outcome {
        let error = SigningError(.invalidJob, "reply_to names a key that is not a list; the reply could not be pushed")
        let entry = ReplyEncoder.dead(error: error, job: o.raw, worker: configuration.workerID, atMilliseconds: JobProcessor.milliseconds())
        return Outcome(raw: o.raw, kind: .dead(entry: entry), error: .invalidJob)
    }
}
