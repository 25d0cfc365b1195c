import CFSignSync
import CFSignCore
import CFSignCrypto
import Dispatch
import Foundation
import Logging
import Synchronization

/// The sign stage's remote half: jobs whose key signs over the network (AWS KMS) are signed by
/// Swift concurrency tasks, their HTTPS calls on NIO's event loop, up to `maxInFlight` at once.
/// The sign stage hands a job over and goes on with its batch (it waits only when `maxInFlight`
/// calls are already out); each outcome goes to the reply stage as soon as it is ready, through
/// one forwarding thread, so no signing lane and no pipeline thread waits on KMS. The jobs stay
/// counted in `Pipeline.held` until answered, like every other job.
///
/// A call that fails because of the key's holder (throttled, 5xx, timeout, denied, expired
/// credentials) is retried in its task with jittered backoff, with the group in use at each try,
/// until `keyUnavailableAfter`; meanwhile readiness and the heartbeat carry the reason. A KMS that
/// comes back simply answers the next try.
final class RemoteSigning: Sendable {
    private let processor: JobProcessor
    private let state: WorkerState
    private let pipeline: Pipeline
    private let logger: Logger
    private let limit: Double
    private let slots: DispatchSemaphore
    private let running = DispatchGroup()
    private let finished = Locked<[Outcome]>([])
    private let ready = DispatchSemaphore(value: 0)
    private let closed = Atomic<Bool>(false)
    private let forwarderDone = DispatchSemaphore(value: 0)
    /// Calls in flight now, for tests and the metric of how far the bound is used.
    let inFlight = Atomic<Int>(0)

    init(processor: JobProcessor, state: WorkerState, pipeline: Pipeline, logger: Logger, maxInFlight: Int, keyUnavailableAfter: Double) {
        self.processor = processor
        self.state = state
        self.pipeline = pipeline
        self.logger = logger
        self.limit = keyUnavailableAfter
        self.slots = DispatchSemaphore(value: max(1, maxInFlight))
        NamedThread.start("cfsign-remote") { [self] in forward() }
    }

    /// Starts signing `job`; waits only while `maxInFlight` calls are already out.
    func submit(_ job: RemoteJob, group: SigningKeyGroup?) {
        slots.wait()
        running.enter()
        inFlight.add(1, ordering: .relaxed)
        Task { [self] in
            let outcome = await sign(job, group: group)
            finished.withLock { $0.append(outcome) }
            ready.signal()
            inFlight.add(-1, ordering: .relaxed)
            slots.signal()
            running.leave()
        }
    }

    /// Waits for every task and for their outcomes to reach the reply stage.
    func close() {
        running.wait()
        closed.store(true, ordering: .releasing)
        ready.signal()
        forwarderDone.wait()
    }

    /// Hands finished outcomes to the reply stage in batches (whatever finished since the last put).
    private func forward() {
        while true {
            ready.wait()
            // Read `closed` before draining: once it is set every outcome is already in `finished`.
            let last = closed.load(ordering: .acquiring)
            let batch = finished.withLock { all -> [Outcome] in
                defer { all.removeAll(keepingCapacity: true) }
                return all
            }
            if !batch.isEmpty { pipeline.toReply.put(batch) }
            if last && batch.isEmpty { break }
            if last { ready.signal() }
        }
        forwarderDone.signal()
    }

    private func sign(_ job: RemoteJob, group: SigningKeyGroup?) async -> Outcome {
        let started = DispatchTime.now().uptimeNanoseconds
        let start = Date()
        var job = job
        var group = group
        var delay = 0.05
        while true {
            let result: Result<[UInt8], SigningError>
            do throws(SigningError) {
                result = .success(try await job.key.signRemotely(job.pending.policy, hash: job.pending.hash))
            } catch {
                result = .failure(error)
            }
            guard case .failure(let error) = result, error.code == .keyUnavailable else {
                if case .success = result { note(nil) }
                return processor.finish(job, result, group: group, started: started)
            }
            note(error.message)
            let elapsed = Date().timeIntervalSince(start)
            guard elapsed < limit, state.phase.load(ordering: .relaxed) != .stopped else {
                return processor.finish(job, result, group: group, started: started)
            }
            // Full jitter, so many throttled calls do not come back in step.
            let wait = min(delay, limit - elapsed) * Double.random(in: 0.5...1)
            try? await Task.sleep(nanoseconds: UInt64(wait * 1e9))
            delay = min(delay * 2, 1)
            group = state.keyGroup
            // Each try is parsed afresh; its record continues the first try's, so the job keeps
            // one span from its first try to its reply, the retries as its events.
            switch processor.withRules(of: state).step(job.raw, group: group, now: Int64(Date().timeIntervalSince1970), deferRemote: true) {
            case .done(var outcome):  // rotated to a key that signs in process, or refused now
                outcome.trace = outcome.trace?.continuing(job.trace)
                return outcome
            case .remote(var again):
                again.trace = again.trace?.continuing(job.trace)
                job = again
            }
        }
    }

    /// Readiness and the heartbeat follow the last call; the change is logged once each way.
    private func note(_ reason: String?) {
        let previous = state.keyUnavailableText
        guard previous != reason else { return }
        if reason == nil, previous == nil { return }
        state.setKeyUnavailable(reason)
        if let reason, previous == nil {
            logger.error("the KMS key does not sign; jobs stay in flight and are retried until key_unavailable_after", metadata: ["reason": "\(reason)"])
        } else if reason == nil {
            logger.notice("the key's holder signs again", metadata: ["was": "\(previous ?? "")"])
        }
    }
}
