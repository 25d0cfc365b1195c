import CFSignCore
import CFSignCrypto
import CFSignRedis
import Foundation
import Logging
import Synchronization

/// The reply stage: answer each signed batch with one script call on its own connection; a lost
/// connection is re-opened and the same replies are sent again (the replies script answers each
/// job at most once). A draining worker leaves only when everything it took is answered.
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
    private let ttl: [UInt8]
    private let maxDead: [UInt8]
    /// nil: not tracing.
    private let spans: JobSpans?

    init(configuration: WorkerConfiguration, state: WorkerState, pipeline: Pipeline, logger: Logger, spans: JobSpans? = nil) {
        self.spans = spans
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
        self.ttl = Array(String(configuration.replyTTL).utf8)
        self.maxDead = Array(String(configuration.deadListLength).utf8)
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
        let replies = try answer(outcomes, connection)
        var results = replies.makeIterator()
        var failed: [Outcome] = []
        var redirected: [Outcome] = []
        var answered: [Outcome] = []
        for o in outcomes {
            let r: RedisReply
            if case .deadInRedis = o.kind { r = .integer(1) } else if let next = results.next() { r = next } else { break }
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
        // After the round trip, so each span ends when its reply was pushed.
        spans?.record(answered)
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

    /// One call of the replies script for the whole batch (see `Scripts.replies`): one result per
    /// outcome that is not `.deadInRedis`, in order; a script error becomes that error for each.
    /// The arguments are built in one flat list: each distinct `reply_to` once (a batch usually
    /// has one or a few), then (target, raw, payload) per job.
    private func answer(_ outcomes: [Outcome], _ connection: RedisConnection) throws(RedisError) -> [RedisReply] {
        var keys: [[UInt8]] = [inflightKey, deadKey, recoveriesKey]
        var targets: [ReplyKey: Int] = [:]
        var arguments: [[UInt8]] = [ttl, maxDead]
        arguments.reserveCapacity(2 + 3 * outcomes.count)
        var count = 0
        for o in outcomes {
            switch o.kind {
            case .reply(let replyTo, let payload):
                let t: Int
                let key = ReplyKey(bytes: Array(replyTo.utf8))
                if let known = targets[key] {
                    t = known
                } else {
                    keys.append(key.bytes)
                    t = keys.count - 3
                    targets[key] = t
                }
                arguments.append(t < Self.decimals.count ? Self.decimals[t] : Array(String(t).utf8))
                arguments.append(o.raw)
                arguments.append(payload)
            case .dead(let entry):
                arguments.append(Self.decimals[0])
                arguments.append(o.raw)
                arguments.append(entry)
            case .deadInRedis:
                continue
            }
            count += 1
        }
        if count == 0 { return [] }
        let reply = try connection.evaluate(Scripts.replies, keys: keys, arguments: arguments)
        if case .error = reply { return Array(repeating: reply, count: count) }
        guard let results = reply.array, results.count == count else {
            return Array(repeating: .error("unexpected reply from the replies script"), count: count)
        }
        return results
    }

    /// A `reply_to` by its bytes: two names Swift's String calls equal (canonically equivalent,
    /// e.g. a precomposed and a decomposed "é") are two Redis keys. Hashed as one block.
    private struct ReplyKey: Hashable {
        let bytes: [UInt8]
        func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
    }

    /// "0" … "63" as arguments, made once.
    private static let decimals: [[UInt8]] = (0..<64).map { Array(String($0).utf8) }

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
