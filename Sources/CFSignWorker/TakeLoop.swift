import CFSignCore
import CFSignCrypto
import CFSignRedis
import Foundation
import Logging
import Synchronization

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
