import CFSignClient
import CFSignCore
import CFSignRedis
import CFSignTestSupport
import Foundation

/// One test's fleet: its own redis-server, a namespace, and (optionally) a key group stored in
/// `{NS}:keygroup` with a freshly generated key and one `cfsign worker` process signing with it.
///
/// ```swift
/// let fleet = try await Fleet.start()
/// defer { fleet.stop() }
/// ```
final class Fleet: @unchecked Sendable {
    static let keyID = "KTESTONLY1"

    let server: RedisServer
    let namespace: Namespace
    let keys: TestKeys?
    let worker: WorkerProcess?

    /// Starts the fleet on a thread of its own: starting redis-server and a worker blocks for
    /// seconds (more under a sanitizer), and blocking the cooperative pool (two threads on two
    /// cores) would starve the other tests' tasks, which then miss their own deadlines.
    static func start(withWorker: Bool = true) async throws -> Fleet {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try Fleet(withWorker: withWorker) }) }.start()
        }
    }

    /// - Parameter withWorker: false gives Redis and a namespace with nobody taking jobs.
    private init(withWorker: Bool = true) throws {
        server = try RedisServer.start()
        namespace = try Namespace("t-\(UUID().uuidString.prefix(8).lowercased())")
        guard withWorker else {
            keys = nil
            worker = nil
            return
        }
        var made: TestKeys?
        do {
            let keys = try TestKeys(ids: [Fleet.keyID])
            made = keys
            let redis = try server.connect()
            _ = try redis.command(["SET", namespace.keyGroup, keys.keyGroupJSON(version: 1)])
            worker = try WorkerProcess.start(redis: server.url, namespace: namespace.name)
            self.keys = keys
        } catch {
            server.stop()
            made?.remove()
            throw error
        }
    }

    /// A client on this fleet's Redis and namespace.
    func client(clientID: String? = nil, defaultTimeout: Duration = .seconds(10)) throws -> CFSignClient {
        try CFSignClient(configuration: .init(redis: server.url, namespace: namespace, clientID: clientID, defaultTimeout: defaultTimeout))
    }

    /// A plain connection, to look at or write keys the way another producer or worker would.
    func connect() throws -> RedisConnection { try server.connect() }

    /// What the worker logged so far (for failure messages).
    var workerLog: String { worker?.log ?? "(no worker)" }

    /// Stops the worker, then Redis; removes every temporary file. Safe to call twice.
    func stop() {
        worker?.stop()
        server.stop()
        keys?.remove()
    }

    deinit { stop() }
}

/// Waits (without blocking a thread) until `condition` holds, or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}

/// The client error a finished call failed with (nil if it succeeded or failed otherwise).
func clientError<T>(of task: Task<T, any Error>) async -> CFSignClientError? {
    do {
        _ = try await task.value
        return nil
    } catch {
        return error as? CFSignClientError
    }
}
