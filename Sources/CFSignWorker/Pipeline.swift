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

    /// The sign stage: parse, validate and sign each batch on the Dispatch pool. Jobs whose key
    /// signs remotely (KMS) leave the lanes planned but unsigned and go to `remote`, which signs
    /// them in tasks and answers each as it completes; the stage goes on with the next batch.
    static func sign(_ pipeline: Pipeline, processor: JobProcessor, state: WorkerState, keyUnavailableAfter: Double, remote: RemoteSigning) {
        var processor = processor
        while let batch = pipeline.toSign.take() {
            let group = state.keyGroup
            processor = processor.withRules(of: state)
            let refusal = group == nil ? state.keyGroupRefusal.map { "version \($0.version.map(String.init) ?? "?"): \($0.reason)" } : nil
            var outcomes: [Outcome] = []
            var jobs: [[UInt8]] = []
            outcomes.reserveCapacity(batch.count)
            for step in processor.steps(batch: batch.jobs, group: group, refusal: refusal, deferRemote: true) {
                switch step {
                case .done(let outcome):
                    outcomes.append(outcome)
                    jobs.append(outcome.raw)
                case .remote(let job):
                    remote.submit(job, group: group)
                }
            }
            retryUnavailable(&outcomes, jobs, processor: processor, state: state, for: keyUnavailableAfter)
            for excerpt in batch.deadInRedis { outcomes.append(processor.oversized(excerpt)) }
            if !outcomes.isEmpty { pipeline.toReply.put(outcomes) }
        }
        remote.close()
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
            // Only signatures made here say the holder is back (a KMS outcome clears it itself).
            if state.keyUnavailableText != nil, outcomes.contains(where: { $0.error == nil }) { state.setKeyUnavailable(nil) }
            return
        }
        let start = Date()
        var delay = 0.05
        while !pending.isEmpty, Date().timeIntervalSince(start) < limit, state.phase.load(ordering: .relaxed) != .stopped {
            state.setKeyUnavailable(Self.reason(outcomes[pending[0]]))
            Thread.sleep(forTimeInterval: min(delay, max(0, limit - Date().timeIntervalSince(start))))
            delay = min(delay * 2, 1)
            let group = state.keyGroup
            let retried = processor.withRules(of: state).process(batch: pending.map { jobs[$0] }, group: group)
            for (n, i) in pending.enumerated() {
                // One span per job across its tries (see `JobTrace.continuing`).
                var again = retried[n]
                again.trace = again.trace?.continuing(outcomes[i].trace)
                outcomes[i] = again
            }
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
