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
    static func sign(_ pipeline: Pipeline, processor: JobProcessor, state: WorkerState) {
        while let batch = pipeline.toSign.take() {
            let group = state.keyGroup
            let refusal = group == nil ? state.keyGroupRefusal.map { "version \($0.version.map(String.init) ?? "?"): \($0.reason)" } : nil
            var outcomes = processor.process(batch: batch.jobs, group: group, refusal: refusal)
            for excerpt in batch.deadInRedis { outcomes.append(processor.oversized(excerpt)) }
            pipeline.toReply.put(outcomes)
        }
        pipeline.toReply.close()
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
