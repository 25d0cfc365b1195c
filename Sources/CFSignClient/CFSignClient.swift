import CFSignSync
import CFSignCore
import CFSignRedis
import Dispatch
import Foundation
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
/// One client owns one reply list (`{NS}:reply:<client id>`) and one background thread that waits
/// on it; replies are matched by job `id`, so a duplicate answer (after a worker crash, delivery is
/// at least once) is dropped. Share one client across your app: it is `Sendable` and every method
/// may be called concurrently. Call `close()` when done.
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
        /// Where dropped replies are reported.
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
    private let pusher: Locked<Pusher>
    private let waiters = Locked<Waiters>(Waiters())
    private let wake = DispatchSemaphore(value: 0)
    private let closed = Atomic<Bool>(false)
    private let counter = Atomic<Int>(0)

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
            let c = try route.connect(connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
            self.pusher = Locked(Pusher(connection: c, route: route))
        } catch {
            throw .redis(error.message)
        }
        // The thread holds the client weakly, so a client the app drops is closed by `deinit`.
        let (wake, configuration, replyKey) = (self.wake, self.configuration, self.replyKey)
        let thread = Thread { [weak self] in
            CFSignClient.readReplies(client: { self }, wake: wake, configuration: configuration, replyKey: replyKey)
        }
        thread.name = "cfsign-client-replies"
        thread.start()
    }

    /// Opens a client from a Redis URL text and a namespace name.
    public convenience init(redis: String, namespace: String = "cfsign") throws(CFSignClientError) {
        let url: RedisURL
        let ns: Namespace
        do { url = try RedisURL(parsing: redis) } catch { throw .invalidConfiguration(error.message) }
        do { ns = try Namespace(namespace) } catch { throw .invalidConfiguration(error.description) }
        try self.init(configuration: Configuration(redis: url, namespace: ns))
    }

    /// Stops the reply thread; calls still waiting fail with `.closed`.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wake.signal()
        let pending = waiters.withLock { w in
            defer { w.byID.removeAll() }
            return Array(w.byID.values)
        }
        for p in pending { p.finish(.failure(.closed)) }
    }

    deinit { close() }

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

    /// Many requests: enqueued in one round trip (one LPUSH), replies collected as they come.
    /// Results are in request order; each fails or succeeds on its own.
    public func sign(_ requests: [SignRequest], timeout: Duration? = nil) async -> [Result<SignedReply, CFSignClientError>] {
        if requests.isEmpty { return [] }
        if closed.load(ordering: .acquiring) { return requests.map { _ in .failure(.closed) } }
        let limit = timeout ?? configuration.defaultTimeout
        let deadline = ContinuousClock.now + limit
        let ids = requests.map { _ in configuration.clientID + "-" + String(counter.add(1, ordering: .relaxed).newValue) }
        let askedAt = Int64(Date().timeIntervalSince1970)
        let jobs = zip(ids, requests).map { id, r in r.jobJSON(id: id, replyTo: replyKey) }
        return await withTaskGroup(of: (Int, Result<SignedReply, CFSignClientError>).self) { group in
            for (i, (id, request)) in zip(ids, requests).enumerated() {
                // Register every waiter before pushing, so no reply can arrive unclaimed.
                let stream = AsyncStream<Result<SignedReply, CFSignClientError>>.makeStream()
                let waiter = Waiter(continuation: stream.continuation, deadline: deadline, seconds: limit, request: request.request, askedAt: askedAt)
                // `closed` is checked under the lock close() takes after setting it: a call racing
                // close() either sees the flag here or has its waiter failed by close(); never both
                // missed (the reply thread is gone after close, so a missed waiter would wait forever).
                let registered = waiters.withLock { w -> Bool in
                    if closed.load(ordering: .acquiring) { return false }
                    w.byID[id] = waiter
                    return true
                }
                if !registered { waiter.finish(.failure(.closed)) }
                group.addTask { (i, await stream.stream.first(where: { _ in true }) ?? .failure(.closed)) }
            }
            if let error = push(jobs) {
                let failed = waiters.withLock { w in ids.compactMap { w.byID.removeValue(forKey: $0) } }
                for f in failed { f.finish(.failure(error)) }
            } else {
                wake.signal()
            }
            var results = [Result<SignedReply, CFSignClientError>?](repeating: nil, count: requests.count)
            for await (i, r) in group { results[i] = r }
            return results.map { $0! }
        }
    }

    /// The pushing connection and where it goes (a cluster's `MOVED` is remembered).
    private struct Pusher {
        var connection: RedisConnection?
        var route: RedisRoute
    }

    /// LPUSH all jobs in one command; one reconnect attempt if the connection was lost, and a
    /// `MOVED` reply (Redis Cluster) followed to the node it names.
    private func push(_ jobs: [[UInt8]]) -> CFSignClientError? {
        let args = [Array("LPUSH".utf8), Array(configuration.namespace.jobs.utf8)] + jobs
        return pusher.withLock { p -> CFSignClientError? in
            var losses = 0, moves = 0
            while true {
                do throws(RedisError) {
                    if p.connection == nil || p.connection!.isBroken {
                        p.connection = try p.route.connect(connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
                    }
                    let reply = try p.connection!.command(bytes: args)
                    if let e = reply.errorMessage { return .redis("Redis refused LPUSH: \(e)") }
                    return nil
                } catch {
                    p.connection = nil
                    if p.route.note(error) { moves += 1 } else { losses += 1 }
                    if losses >= 2 || moves > 3 { return .redis(error.message) }
                }
            }
        }
    }

    // MARK: Replies

    private struct Waiter {
        let continuation: AsyncStream<Result<SignedReply, CFSignClientError>>.Continuation
        let deadline: ContinuousClock.Instant
        let seconds: Duration
        /// What was asked, so a reply is checked against it before it is returned.
        let request: SigningRequest
        let askedAt: Int64

        func finish(_ result: Result<SignedReply, CFSignClientError>) {
            continuation.yield(result)
            continuation.finish()
        }
    }

    private struct Waiters {
        var byID: [String: Waiter] = [:]
    }

    /// The reply thread: BLPOP the reply list while anyone waits; resolve waiters by id; expire the
    /// ones past their deadline. Idle clients cost no Redis traffic.
    private static func readReplies(client: () -> CFSignClient?, wake: DispatchSemaphore, configuration: Configuration, replyKey: String) {
        var connection: RedisConnection?
        var route = RedisRoute(url: configuration.redis)
        var backoff = Backoff(initial: 0.05, maximum: 2)
        while true {
            // The client is held only for a moment, never across a blocking wait.
            let next: ContinuousClock.Instant??
            if let c = client(), !c.closed.load(ordering: .acquiring) { next = .some(c.expireOverdue()) } else { next = .none }
            guard let nearestOrNil = next else { return }
            guard let nearest = nearestOrNil else {
                _ = wake.wait(timeout: .now() + 5)
                continue
            }
            do throws(RedisError) {
                if connection == nil || connection!.isBroken {
                    connection = try route.connect(connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
                }
                let untilDeadline = max(0.01, Double((nearest - ContinuousClock.now).components.seconds) + Double((nearest - ContinuousClock.now).components.attoseconds) / 1e18)
                let block = min(0.5, configuration.commandTimeout / 4, untilDeadline)
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
        // No waiter: a duplicate (at-least-once delivery) or a reply after its timeout. Dropped.
        guard let waiter = waiters.withLock({ $0.byID[parsed.id] }) else { return }
        if case .success(let reply) = parsed.result,
           let reason = ReplyCheck.mismatch(url: reply.url, cookies: reply.cookies?.map { ($0.name, $0.value) }, expiresAt: reply.expiresAt,
                                            keyID: reply.keyID, request: waiter.request, askedAt: waiter.askedAt,
                                            now: Int64(Date().timeIntervalSince1970), rounding: configuration.expiryRounding) {
            // Not the answer to what was asked (reply injection, or a worker whose expiry_rounding
            // exceeds Configuration.expiryRounding): dropped, and the call keeps waiting.
            configuration.logger.warning("dropped a reply that does not match its request", metadata: ["id": "\(parsed.id)", "reason": "\(reason)"])
            return
        }
        if let w = waiters.withLock({ $0.byID.removeValue(forKey: parsed.id) }) { w.finish(parsed.result) }
    }

    /// Fails every waiter past its deadline; returns the nearest remaining deadline (nil: none waits).
    private func expireOverdue() -> ContinuousClock.Instant? {
        let now = ContinuousClock.now
        let (overdue, nearest) = waiters.withLock { w -> ([Waiter], ContinuousClock.Instant?) in
            var overdue: [Waiter] = []
            var nearest: ContinuousClock.Instant?
            for (id, waiter) in w.byID {
                if waiter.deadline <= now {
                    overdue.append(waiter)
                    w.byID.removeValue(forKey: id)
                } else if nearest == nil || waiter.deadline < nearest! {
                    nearest = waiter.deadline
                }
            }
            return (overdue, nearest)
        }
        for w in overdue {
            w.finish(.failure(.timeout(namespace: configuration.namespace.name, after: w.seconds)))
        }
        return nearest
    }
}
