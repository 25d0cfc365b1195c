import CFSignSync
import CFSignCore
import CFSignCrypto
import CFSignRedis
import Dispatch
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import CFSignTracing

/// A cfsign worker process: the fetch, heartbeat and key-group threads around one shared state.
///
/// Run it as a swift-service-lifecycle `Service`: graceful shutdown (the group's first SIGTERM/SIGINT)
/// drains (stop taking jobs, answer those held, deregister, return); cancellation (a second signal,
/// when the group lists SIGTERM/SIGINT as cancellation signals too) returns at once, leaving held
/// jobs in the in-flight list for another worker to requeue.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    private let logger: Logger
    private let state: WorkerState
    private let heartbeatWake = DispatchSemaphore(value: 0)
    private let fetchFinished = Atomic<Bool>(false)
    /// nil: not tracing (no export configured, or a sampler that samples nothing), and no
    /// timestamps are taken.
    private let spans: JobSpans?
    private let kms: (any KMSKeyLoader)?

    /// - Parameter traces: where job spans go (OTLP/HTTP, from the `OTEL_*` variables); nil: the
    ///   worker records nothing.
    /// - Parameter version: this build's version, the exported spans' instrumentation scope version.
    /// - Parameter kms: loads groups' `awskms:` keys (`CFSignKMS.AWSKMSKeys()`); nil refuses them.
    public init(configuration: WorkerConfiguration, logger: Logger, traces: TraceExport? = nil, version: String = "",
                kms: (any KMSKeyLoader)? = nil) {
        self.configuration = configuration
        self.kms = kms
        self.state = WorkerState(signatureCacheSize: configuration.signatureCacheSize, rules: configuration.rules)
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.workerID)"
        self.logger = logger
        self.spans = traces.flatMap { JobSpans(export: $0, namespace: configuration.namespace, version: version, logger: logger) }
    }

    /// The signing policy for the jobs taken from now on (a batch being signed keeps the one it
    /// started with). For `ConfigFileReloader`: the rest of the configuration is fixed at start.
    public func updateSigningRules(_ rules: SigningRules) {
        guard rules != state.signingRules else { return }
        state.setSigningRules(rules)
    }

    public func run() async throws {
        // Resumed once: by the worker's threads when they finish, or by cancellation (a second
        // signal during the drain), whichever comes first.
        let finished = Locked<(continuation: CheckedContinuation<Void, Error>?, cancelled: Bool)>((nil, false))
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                    let cancelled = finished.withLock { f -> Bool in
                        if !f.cancelled { f.continuation = continuation }
                        return f.cancelled
                    }
                    if cancelled { return continuation.resume(throwing: CancellationError()) }
                    NamedThread.start("cfsign-main") { [self] in
                        runThreads()
                        finished.withLock { f in f.continuation.take() }?.resume()
                    }
                }
            } onGracefulShutdown: { [self] in
                beginDrain()
            }
        } onCancel: { [self] in
            let continuation = finished.withLock { f in
                f.cancelled = true
                return f.continuation.take()
            }
            guard let continuation else { return }
            abandoned.store(true, ordering: .releasing)
            logger.warning("second signal: exiting now; held jobs stay in the in-flight list for another worker to requeue")
            continuation.resume(throwing: CancellationError())
        }
    }

    /// True once cancellation (a second SIGTERM/SIGINT while draining) ended `run` before the
    /// held jobs were answered; the process should then exit non-zero.
    public var abandonedHeldJobs: Bool { abandoned.load(ordering: .acquiring) }
    private let abandoned = Atomic<Bool>(false)

    /// Ready means: connected to Redis, holding a usable key group, and not draining.
    public var readiness: (ready: Bool, detail: String) {
        if !state.isRunning { return (false, "draining") }
        if !state.connected.load(ordering: .relaxed) { return (false, "not connected to Redis") }
        guard let group = state.keyGroup else {
            return (false, "no usable key group" + (state.keyGroupRefusal.map { " (refused: \($0.reason))" } ?? ""))
        }
        if let reason = state.keyUnavailableText { return (false, "key unavailable: \(reason)") }
        return (true, "ready: key group version \(group.version)")
    }

    /// Stops taking jobs; held jobs are still signed and answered. A second signal exits at once.
    public func beginDrain() {
        guard state.phase.compareExchange(expected: .running, desired: .draining, ordering: .acquiringAndReleasing).exchanged else { return }
        logger.notice("draining: no new jobs; answering the ones held (a second SIGTERM/SIGINT exits at once)")
        heartbeatWake.signal()
    }

    /// The whole life of the worker, on its own thread: blocking Redis loops never run on the
    /// cooperative pool.
    private func runThreads() {
        let hashes = HashAlgorithm.allCases.filter { DigestSupport.signable.contains($0) }.map(\.rawValue)
        logger.notice("starting", metadata: [
            "redis": "\(configuration.redis)", "namespace": "\(configuration.namespace)",
            "concurrency": "\(configuration.concurrency)", "batch_size": "\(configuration.batchSize)",
            "openssl": "\(DigestSupport.openSSLVersion)", "digests": "\(hashes.joined(separator: ","))",
            "default_hash": "\(configuration.defaultHash.rawValue)",
            "signing_policy": "\(configuration.rules.summary)", "audit": "\(configuration.audit.rawValue)",
        ])
        if configuration.rules.isEmpty {
            logger.warning("no signing policy: any producer can get a link to any host and path, up to max_lifetime; set allowed_hosts / allowed_path_prefixes (worker-config/worker.conf)")
        }
        if !DigestSupport.signable.contains(configuration.defaultHash) {
            logger.warning("this OpenSSL will not sign with the default hash; jobs that do not name another get unsupported_hash", metadata: ["default_hash": "\(configuration.defaultHash.rawValue)"])
        }
        // Each loop is made on the thread that runs it and owns its connections (they are not Sendable).
        let initialLoad = DispatchSemaphore(value: 0)
        Self.spawn("cfsign-keygroup", group: nil) { [self] in
            let watcher = KeyGroupWatcher(configuration: configuration, kms: kms, state: state, logger: logger, heartbeatWake: heartbeatWake)
            watcher.loadInitial()
            initialLoad.signal()
            watcher.run()
        }
        initialLoad.wait()
        let group = DispatchGroup()
        let registration = DispatchSemaphore(value: 0)
        let registered = Atomic<Bool>(false)
        Self.spawn("cfsign-beat", group: group) { [self] in
            let heartbeat = HeartbeatLoop(configuration: configuration, state: state, logger: logger, wake: heartbeatWake)
            // Registered before the first job is taken, so a crash right after taking one is recoverable.
            registered.store(heartbeat.register(), ordering: .releasing)
            registration.signal()
            heartbeat.run(fetchDone: { self.fetchFinished.load(ordering: .acquiring) })
        }
        registration.wait()
        guard registered.load(ordering: .acquiring) else {
            fetchFinished.store(true, ordering: .releasing)
            heartbeatWake.signal()
            group.wait()
            logger.notice("stopped before registering")
            return
        }
        let pipeline = Pipeline()
        var processor = JobProcessor(
            namespace: configuration.namespace,
            signer: LinkSigner(limits: configuration.signingLimits, rules: configuration.rules),
            workerID: configuration.workerID, concurrency: configuration.concurrency, metrics: state.metrics)
        processor.auditing = configuration.audit != .off
        processor.cache = state.cache
        processor.tracing = spans != nil
        let signingProcessor = processor
        spans?.start()
        let stages = DispatchGroup()
        Self.spawn("cfsign-take", group: stages) { [self] in
            TakeLoop(configuration: configuration, state: state, pipeline: pipeline, logger: logger).run()
        }
        let keyUnavailableAfter = configuration.keyUnavailableAfter
        let remote = RemoteSigning(processor: signingProcessor, state: state, pipeline: pipeline, logger: logger,
                                   maxInFlight: configuration.kmsMaxInFlight, keyUnavailableAfter: keyUnavailableAfter)
        Self.spawn("cfsign-sign", group: stages) { [state] in
            Pipeline.sign(pipeline, processor: signingProcessor, state: state, keyUnavailableAfter: keyUnavailableAfter, remote: remote)
        }
        Self.spawn("cfsign-reply", group: stages) { [self] in
            ReplyLoop(configuration: configuration, state: state, pipeline: pipeline, logger: logger, spans: spans).run()
        }
        group.enter()
        stages.notify(queue: .global()) { [self] in
            spans?.finish()
            fetchFinished.store(true, ordering: .releasing)
            heartbeatWake.signal()
            group.leave()
        }
        logger.notice("running", metadata: ["keygroup_version": "\(state.keyGroup.map { String($0.version) } ?? "none")"])
        group.wait()
        state.phase.store(.stopped, ordering: .releasing)
        kms?.shutdown()
        logger.notice("stopped", metadata: ["jobs": "\(state.jobs.load(ordering: .relaxed))", "errors": "\(state.errors.load(ordering: .relaxed))", "dead": "\(state.dead.load(ordering: .relaxed))"])
    }

    private static func spawn(_ name: String, group: DispatchGroup?, _ body: @escaping @Sendable () -> Void) {
        group?.enter()
        NamedThread.start(name) {
            body()
            group?.leave()
        }
    }
}
