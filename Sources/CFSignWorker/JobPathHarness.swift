import CFSignCore
import CFSignCrypto
import Logging

/// The whole worker path for one job, without Redis: raw bytes → outcome → the bytes the reply
/// stage would push, then the bookkeeping that follows (counters, metrics, log lines, audit fields,
/// the heartbeat document). For the libFuzzer target `FuzzWorkerPath` (scripts/fuzz) and tests:
/// every input must end in a reply or dead entry the contract allows, and nothing may trap.
@_spi(Fuzzing) public final class JobPathHarness {
    private let processor: JobProcessor
    private let state: WorkerState
    private let ledger: OutcomeLedger
    private let heartbeat: HeartbeatLoop
    public let configuration: WorkerConfiguration

    /// What the reply stage would push for one job.
    public enum Pushed: Sendable {
        /// A reply onto `replyTo`.
        case reply(replyTo: String, payload: [UInt8])
        /// A dead entry.
        case dead(entry: [UInt8])
    }

    public init(configuration: WorkerConfiguration, keyGroup: SigningKeyGroup?) {
        self.configuration = configuration
        let logger = Logger(label: "cfsign.fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
        state = WorkerState(signatureCacheSize: configuration.signatureCacheSize)
        if let keyGroup { state.swapIn(keyGroup) }
        var processor = JobProcessor(
            namespace: configuration.namespace,
            signer: LinkSigner(limits: configuration.signingLimits, rules: configuration.rules),
            workerID: configuration.workerID, concurrency: 1, metrics: state.metrics)
        processor.auditing = true
        processor.cache = state.cache
        self.processor = processor
        ledger = OutcomeLedger(state: state, logger: logger)
        heartbeat = HeartbeatLoop(configuration: configuration, state: state, logger: logger, wake: .init(value: 0))
    }

    /// One job, signed at `now` (epoch seconds), answered and accounted for.
    public func answer(_ raw: [UInt8], now: Int64) -> Pushed {
        let outcome = processor.process(raw, group: state.keyGroup, now: now)
        ledger.answered(outcome)
        if let audit = outcome.audit { _ = audit.fields }
        _ = heartbeat.heartbeat().json
        switch outcome.kind {
        case .reply(let replyTo, let payload): return .reply(replyTo: replyTo, payload: payload)
        case .dead(let entry): return .dead(entry: entry)
        case .deadInRedis: return .dead(entry: [])
        }
    }
}
