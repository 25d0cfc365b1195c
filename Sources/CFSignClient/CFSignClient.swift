import CFSignSync
import CFSignCore
import CFSignRedis
import Dispatch
import Foundation
import Instrumentation
import Logging
import Synchronization

/// A producer's handle on a cfsign fleet: enqueue signing jobs on Redis and await their replies.
///
/// ```swift
/// let client = try CFSignClient(redis: "redis://127.0.0.1:6379", namespace: "cfsign")
/// let link = try await client.sign(url: "https://d111111abcdef8.cloudfront.net/invoices/42.pdf", expiresIn: 3600)
/// print(link.url!)
/// ```
///
/// All Redis I/O runs on the client's own two threads, never on the caller's: callers suspend until
/// their reply (or timeout, or cancellation). Calls made while the push thread is busy are
/// coalesced into one LPUSH (auto-pipelining), so throughput grows with concurrency. One client
/// owns one reply list (`{NS}:reply:<client id>`); replies are matched by job `id` and checked
/// against the request (`ReplyCheck`), so a duplicate (delivery is at least once) or an injected
/// reply is dropped. Share one client across your app: it is `Sendable`. Call `close()` when done,
/// or run `CFSignClientService` in your app's ServiceGroup.
public final class CFSignClient: Sendable {
    public struct Configuration: Sendable {
        /// Where the fleet's Redis is.
        public var redis: RedisURL
        /// The fleet's namespace.
        public var namespace: Namespace
        /// Names this client's reply list; unique per process by default.
        public var clientID: String
        /// Used when a call gives no timeout.
        public var defaultTimeout: Duration
        /// Seconds to connect; replies are read with short blocking pops well inside `commandTimeout`.
        public var connectTimeout: Double
        public var commandTimeout: Double
        /// The largest `expiry_rounding` the fleet's workers apply (seconds; 0: none). Replies are
        /// checked against their request (`ReplyCheck`), and an `expires_in` link may expire this
        /// much later than asked.
        public var expiryRounding: Int64
        /// Where dropped replies and Redis trouble are reported.
        public var logger: Logger

        public init(redis: RedisURL = .default, namespace: Namespace = .default, clientID: String? = nil,
                    defaultTimeout: Duration = .seconds(10), connectTimeout: Double = 5, commandTimeout: Double = 10,
                    expiryRounding: Int64 = 0, logger: Logger = Logger(label: "cfsign.client")) {
            self.redis = redis
            self.namespace = namespace
            self.clientID = clientID ?? CFSignClient.randomClientID()
            self.defaultTimeout = defaultTimeout
            self.connectTimeout = connectTimeout
            self.commandTimeout = commandTimeout
            self.expiryRounding = expiryRounding
            self.logger = logger
        }
    }

    public let configuration: Configuration
    private let replyKey: String
    private let calls = Locked<Calls>(Calls())
    /// Signalled when jobs are queued (push thread) and when the first call starts waiting (reply thread).
    private let pushWake = DispatchSemaphore(value: 0)
    private let replyWake = DispatchSemaphore(value: 0)
    private let closed = Atomic<Bool>(false)
    private let counter = Atomic<Int>(0)

    /// Jobs pushed in one LPUSH at most (a burst larger than this goes out in several).
    static let maximumPushBatch = 1000

    /// Opens a client; connects once to fail early on a bad URL or unreachable Redis.
    public init(configuration: Configuration) throws(CFSignClientError) {
        // Job ids are "<client id>-<n>" and may be at most 200 bytes (PROTOCOL.md, "Job").
        guard !configuration.clientID.isEmpty, configuration.clientID.utf8.count <= 160 else {
            throw .invalidConfiguration("client id must be 1-160 bytes (job ids built from it are at most 200)")
        }
        self.configuration = configuration
        self.replyKey = configuration.namespace.reply(configuration.clientID)
        do {
            var route = RedisRoute(url: configuration.redis)
            _ = try route.connect(connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
        } catch {
            throw .redis(error.message)
        }
        // The threads hold the client weakly, so a client the app drops is closed by `deinit`.
        let (pushWake, replyWake, configuration, replyKey) = (self.pushWake, self.replyWake, self.configuration, self.replyKey)
        NamedThread.start("cfsign-push") { [weak self] in
            CFSignClient.pushJobs(client: { self }, wake: pushWake, configuration: configuration)
        }
        NamedThread.start("cfsign-replies") { [weak self] in
            CFSignClient.readReplies(client: { self }, wake: replyWake, configuration: configuration, replyKey: replyKey)
        }
    }

    /// Opens a client from a Redis URL text and a namespace name.
    public convenience init(redis: String, namespace: String = "cfsign") throws(CFSignClientError) {
        let url: RedisURL
        let ns: Namespace
        do { url = try RedisURL(parsing: redis) } catch { throw .invalidConfiguration(error.message) }
        do { ns = try Namespace(namespace) } catch { throw .invalidConfiguration(error.description) }
        try self.init(configuration: Configuration(redis: url, namespace: ns))
    }

    /// Stops both threads; calls still waiting fail with `.closed`, queued jobs are not pushed.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let pending = calls.withLock { c in
            defer { c.byID.removeAll(); c.queue.removeAll() }
            return Array(c.byID.values)
        }
        pushWake.signal()
        replyWake.signal()
        for p in pending { p.pending.resolve(.failure(.closed)) }
    }

    deinit { close() }

    /// Calls still waiting for a reply (queued, pushed, or waiting for a worker).
    public var waitingCalls: Int { calls.withLock { $0.byID.count } }

    /// Waits until no call is waiting any more, or `timeout` passes (graceful shutdown).
    public func drain(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while waitingCalls > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    static func randomClientID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let random = (0..<6).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
        return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(random)"
    }

    // MARK: Signing

    /// A signed URL. Fields are checked here first (same rules and messages as the workers), so a bad
    /// request fails at once without a round trip.
    public func sign(url: String, expiresIn: Int64? = nil, expiresAt: Int64? = nil, startsAt: Int64? = nil,
                     ip: String? = nil, resource: String? = nil, hash: HashAlgorithm? = nil, keyID: String? = nil,
                     timeout: Duration? = nil) async throws(CFSignClientError) -> SignedReply {
        let request = try SignRequest(url: url, expiresIn: expiresIn, expiresAt: expiresAt, startsAt: startsAt, ip: ip, resource: resource, output: .url, hash: hash, keyID: keyID)
        return try await sign(request, timeout: timeout)
    }

    /// The signed-cookie set for a URL (or a wildcard `resource`).
    public func signCookies(url: String, expiresIn: Int64? = nil, expiresAt: Int64? = nil, startsAt: Int64? = nil,
                            ip: String? = nil, resource: String? = nil, hash: HashAlgorithm? = nil, keyID: String? = nil,
                            timeout: Duration? = nil) async throws(CFSignClientError) -> SignedReply {
        let request = try SignRequest(url: url, expiresIn: expiresIn, expiresAt: expiresAt, startsAt: startsAt, ip: ip, resource: resource, output: .cookies, hash: hash, keyID: keyID)
        return try await sign(request, timeout: timeout)
    }

    /// One prepared request.
    public func sign(_ request: SignRequest, timeout: Duration? = nil) async throws(CFSignClientError) -> SignedReply {
        try await sign([request], timeout: timeout)[0].get()
    }

    /// Many requests, queued together (one LPUSH unless other calls join it); results in request
    /// order, each failing or succeeding on its own. A cancelled task stops waiting at once
    /// (`.cancelled`), and its jobs that are not pushed yet are not pushed.
    public func sign(_ requests: [SignRequest], timeout: Duration? = nil) async -> [Result<SignedReply, CFSignClientError>] {
        if requests.isEmpty { return [] }
        if closed.load(ordering: .acquiring) { return requests.map { _ in .failure(.closed) } }
        if Task.isCancelled { return requests.map { _ in .failure(.cancelled) } }
        let limit = timeout ?? configuration.defaultTimeout
        let askedAt = Int64(Date().timeIntervalSince1970)
        let trace = Self.currentTraceContext()
        let calls = requests.map { request in
            Call(id: configuration.clientID + "-" + String(counter.add(1, ordering: .relaxed).newValue),
                 request: request.request, askedAt: askedAt, seconds: limit)
        }
        // Registered and queued under the lock that close() takes after setting `closed`: a call
        // racing close() either sees the flag here or is failed by close(), never neither.
        let registered = self.calls.withLock { c -> Bool in
            if closed.load(ordering: .acquiring) { return false }
            for (call, request) in zip(calls, requests) {
                c.byID[call.id] = call
                c.queue.append((call.id, request.jobJSON(id: call.id, replyTo: replyKey, trace: trace)))
            }
            return true
        }
        if !registered { return requests.map { _ in .failure(.closed) } }
        pushWake.signal()
        replyWake.signal()
        let nanoseconds = limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: nanoseconds))) { [weak self] in
            self?.expire(calls.map(\.id))
        }
        return await withTaskCancellationHandler {
            var results: [Result<SignedReply, CFSignClientError>] = []
            results.reserveCapacity(calls.count)
            for call in calls { results.append(await call.pending.value()) }
            return results
        } onCancel: {
            self.finish(calls.map(\.id), with: .cancelled)
        }
    }

    /// The caller's trace context as the instrument the app bootstrapped writes it (swift-otel's
    /// W3C propagator, say): the worker's span for each job becomes a child of the caller's span.
    /// nil without a bootstrapped instrument or a current context, or when what it wrote is not
    /// a valid version-00 `traceparent` (the worker would ignore it anyway).
    static func currentTraceContext() -> TraceContext? {
        guard let context = InstrumentationContext.current else { return nil }
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: TraceHeaderInjector())
        guard let parent = carrier["traceparent"] else { return nil }
        return TraceContext(traceparent: parent, tracestate: carrier["tracestate"])
    }

    // MARK: Calls

    /// One waiting call: what was asked (to check the reply against), and where its result goes.
    private struct TraceHeaderInjector: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
            carrier[key.lowercased()] = value
        }
    }

    private struct Call: Sendable {
        let id: String
        let request: SigningRequest
        let askedAt: Int64
        let seconds: Duration
        let pending = Pending()
    }

    private struct Calls {
        var byID: [String: Call] = [:]
        /// Jobs not pushed yet, oldest first.
        var queue: [(id: String, job: [UInt8])] = []
        /// Ids pushed to Redis (so a timeout says "no worker answered", not "Redis unreachable").
        var pushed: Set<String> = []
        /// The last push error, for calls that time out before their job could be pushed.
        var lastPushError: String?
    }

    /// Ends calls with `error` (timeout, cancellation); jobs not pushed yet are dropped.
    private func finish(_ ids: [String], with error: CFSignClientError) {
        let ended = calls.withLock { c -> [Call] in
            let ended = ids.compactMap { c.byID.removeValue(forKey: $0) }
            if !ended.isEmpty {
                let gone = Set(ended.map(\.id))
                c.queue.removeAll { gone.contains($0.id) }
                c.pushed.subtract(gone)
            }
            return ended
        }
        for call in ended { call.pending.resolve(.failure(error)) }
    }

    /// At a batch's deadline: every call of it still waiting fails, with the reason that fits.
    private func expire(_ ids: [String]) {
        let (ended, lastError) = calls.withLock { c -> ([(Call, Bool)], String?) in
            let ended = ids.compactMap { id in c.byID.removeValue(forKey: id).map { ($0, c.pushed.remove(id) != nil) } }
            if !ended.isEmpty {
                let gone = Set(ids)
                c.queue.removeAll { gone.contains($0.id) }
            }
            return (ended, c.lastPushError)
        }
        for (call, pushed) in ended {
            if pushed {
                call.pending.resolve(.failure(.timeout(namespace: configuration.namespace.name, after: call.seconds)))
            } else {
                call.pending.resolve(.failure(.redis("the job could not be pushed within \(CFSignClientError.seconds(call.seconds)) s: \(lastError ?? "Redis did not answer")")))
            }
        }
    }

    // MARK: The push thread

    /// Takes every queued job (up to one LPUSH's worth) whose call still waits, in order.
    private func takeQueued() -> [(id: String, job: [UInt8])] {
        calls.withLock { c in
            let n = min(c.queue.count, Self.maximumPushBatch)
            let batch = Array(c.queue.prefix(n))
            c.queue.removeFirst(n)
            return batch
        }
    }

    /// Marks jobs pushed, or puts them back at the front of the queue after a failed push (a call
    /// cancelled or timed out meanwhile is not put back).
    private func pushed(_ batch: [(id: String, job: [UInt8])], error: String?) {
        calls.withLock { c in
            if let error {
                c.lastPushError = error
                c.queue.insert(contentsOf: batch.filter { c.byID[$0.id] != nil }, at: 0)
            } else {
                for item in batch where c.byID[item.id] != nil { c.pushed.insert(item.id) }
            }
        }
    }

    /// The push thread: whatever is queued when it is free goes out as one LPUSH. A lost
    /// connection is re-opened with backoff, in the background; calls keep waiting until their own
    /// deadline meanwhile, and a `MOVED` (Redis Cluster) is followed to the node it names.
    private static func pushJobs(client: () -> CFSignClient?, wake: DispatchSemaphore, configuration: Configuration) {
        var connection: RedisConnection?
        var route = RedisRoute(url: configuration.redis)
        var backoff = Backoff(initial: 0.05, maximum: 2)
        let jobsKey = Array(configuration.namespace.jobs.utf8)
        while true {
            // The client is held only for a moment, never across a wait.
            let batch: [(id: String, job: [UInt8])]
            if let c = client(), !c.closed.load(ordering: .acquiring) { batch = c.takeQueued() } else { return }
            if batch.isEmpty {
                _ = wake.wait(timeout: .now() + 5)
                continue
            }
            var failure: String?
            do throws(RedisError) {
                if connection == nil || connection!.isBroken {
                    connection = try route.connect(connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
                }
                let reply = try connection!.command(bytes: [Array("LPUSH".utf8), jobsKey] + batch.map(\.job))
                if let e = reply.errorMessage { failure = "Redis refused LPUSH: \(e)" }
            } catch {
                connection = nil
                failure = error.message
                if route.note(error) { backoff.reset() }
            }
            guard let c = client() else { return }
            c.pushed(batch, error: failure)
            if let failure {
                let delay = backoff.next()
                c.configuration.logger.warning("cannot push jobs; retrying in the background until each call's timeout", metadata: ["error": "\(failure)", "retry_in_s": "\(delay)"])
                Thread.sleep(forTimeInterval: delay)
            } else {
                backoff.reset()
            }
        }
    }

    // MARK: The reply thread

    /// The reply thread: BLPOP the reply list while anyone waits; resolve calls by id. Idle clients
    /// cost no Redis traffic.
    private static func readReplies(client: () -> CFSignClient?, wake: DispatchSemaphore, configuration: Configuration, replyKey: String) {
        var connection: RedisConnection?
        var route = RedisRoute(url: configuration.redis)
        var backoff = Backoff(initial: 0.05, maximum: 2)
        while true {
            let waiting: Bool
            if let c = client(), !c.closed.load(ordering: .acquiring) { waiting = c.waitingCalls > 0 } else { return }
            guard waiting else {
                _ = wake.wait(timeout: .now() + 5)
                continue
            }
            do throws(RedisError) {
                if connection == nil || connection!.isBroken {
                    connection = try route.connect(connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
                }
                let block = min(0.5, configuration.commandTimeout / 4)
                // Take everything already there in one go, else block briefly for the next one.
                var replies = try connection!.command(["LPOP", replyKey, "1000"]).array?.compactMap(\.bytes) ?? []
                if replies.isEmpty {
                    let r = try connection!.command(["BLPOP", replyKey, String(format: "%.3f", block)])
                    if let pair = r.array, pair.count == 2, let bytes = pair[1].bytes { replies = [bytes] }
                }
                guard let c = client() else { return }
                for raw in replies { c.deliver(raw) }
                backoff.reset()
            } catch {
                connection = nil
                // A MOVED names the node to read from: go there at once.
                if !route.note(error) { Thread.sleep(forTimeInterval: backoff.next()) }
            }
        }
    }

    private func deliver(_ raw: [UInt8]) {
        guard let parsed = try? SignedReply.parse(raw) else { return }
        // No call: a duplicate (at-least-once delivery) or a reply after its timeout. Dropped.
        guard let call = calls.withLock({ $0.byID[parsed.id] }) else { return }
        if case .success(let reply) = parsed.result,
           let reason = ReplyCheck.mismatch(url: reply.url, cookies: reply.cookies?.map { ($0.name, $0.value) }, expiresAt: reply.expiresAt,
                                            keyID: reply.keyID, request: call.request, askedAt: call.askedAt,
                                            now: Int64(Date().timeIntervalSince1970), rounding: configuration.expiryRounding) {
            // Not the answer to what was asked (reply injection, or a worker whose expiry_rounding
            // exceeds Configuration.expiryRounding): dropped, and the call keeps waiting.
            configuration.logger.warning("dropped a reply that does not match its request", metadata: ["id": "\(parsed.id)", "reason": "\(reason)"])
            return
        }
        let ended = calls.withLock { c -> Call? in
            c.pushed.remove(parsed.id)
            return c.byID.removeValue(forKey: parsed.id)
        }
        ended?.pending.resolve(parsed.result)
    }
}

/// One call's result, set once by whichever thread gets there first (reply, timeout, cancellation,
/// close), and awaited by the caller, before or after it is set.
final class Pending: Sendable {
    private enum State {
        case waiting(CheckedContinuation<Result<SignedReply, CFSignClientError>, Never>?)
        case done(Result<SignedReply, CFSignClientError>)
    }

    private let state = Locked<State>(.waiting(nil))

    /// Sets the result; a second call does nothing.
    func resolve(_ result: Result<SignedReply, CFSignClientError>) {
        let continuation = state.withLock { s -> CheckedContinuation<Result<SignedReply, CFSignClientError>, Never>? in
            guard case .waiting(let c) = s else { return nil }
            s = .done(result)
            return c
        }
        continuation?.resume(returning: result)
    }

    func value() async -> Result<SignedReply, CFSignClientError> {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> Result<SignedReply, CFSignClientError>? in
                switch s {
                case .done(let r): return r
                case .waiting: s = .waiting(continuation); return nil
                }
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
