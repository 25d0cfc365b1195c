import CFSignCore
import Foundation
import Logging

/// The bookkeeping of answered jobs: heartbeat counters, metrics and log lines. Kept apart from
/// the reply stage's Redis round trips so the fuzz harness runs exactly this code on every input.
/// Used from one thread at a time (the reply stage's).
final class OutcomeLedger {
    private let state: WorkerState
    private let errorLog: ErrorLog

    init(state: WorkerState, logger: Logger) {
        self.state = state
        self.errorLog = ErrorLog(logger: logger)
    }

    /// Counts a job once, when its reply (or dead entry) has been pushed.
    func answered(_ o: Outcome) {
        let metrics = state.metrics
        switch (o.kind, o.error) {
        case (.dead, let code), (.deadInRedis, let code):
            state.dead.add(1, ordering: .relaxed)
            metrics.dead[code ?? .invalidJob]?.increment()
            errorLog.dead(code ?? .invalidJob)
        case (.reply, nil):
            state.jobs.add(1, ordering: .relaxed)
            metrics.signed.increment()
        case (.reply, let code?):
            state.errors.add(1, ordering: .relaxed)
            metrics.refused[code]?.increment()
            errorLog.refused(code)
        }
        // `enqueued_at_ms` is the producer's number: subtract without trapping, and record only
        // an age that makes sense (a day at most).
        if let enqueued = o.enqueuedAtMilliseconds {
            let (age, overflow) = JobProcessor.milliseconds().subtractingReportingOverflow(enqueued)
            if !overflow, age >= 0, age < 86_400_000 { metrics.jobAge.recordMilliseconds(age) }
        }
    }

    /// A reply the reply script refused: this worker no longer held the job (it stalled past its
    /// heartbeat and the job was requeued); whoever holds it now answers it. Counted, so a fleet
    /// that keeps stalling shows.
    func stale() {
        state.metrics.staleReplies.increment()
        errorLog.stale()
    }
}

/// Logs refused jobs by class: the first of each code at once, then at most one summary a minute.
final class ErrorLog {
    private let logger: Logger
    private var counts: [String: Int] = [:]
    private var lastLog: [String: Date] = [:]

    init(logger: Logger) { self.logger = logger }

    func refused(_ code: ErrorCode) { note("refused:" + code.rawValue, .info, "jobs answered with an error", code: code.rawValue) }
    func dead(_ code: ErrorCode) { note("dead:" + code.rawValue, .warning, "jobs sent to the dead list", code: code.rawValue) }
    func stale() {
        note("stale", .warning, "replies not pushed: this worker no longer held those jobs (it stalled past its heartbeat and they were requeued; whoever holds them answers)", code: nil)
    }

    private func note(_ key: String, _ level: Logger.Level, _ message: Logger.Message, code: String?) {
        counts[key, default: 0] += 1
        let now = Date()
        if let last = lastLog[key], now.timeIntervalSince(last) < 60 { return }
        var metadata: Logger.Metadata = ["count": "\(counts[key]!)"]
        if let code { metadata["code"] = "\(code)" }
        logger.log(level: level, message, metadata: metadata)
        counts[key] = 0
        lastLog[key] = now
    }
}
