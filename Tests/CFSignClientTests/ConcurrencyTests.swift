import CFSignClient
import CFSignCore
import CFSignRedis
import CFSignTestSupport
import Dispatch
import Foundation
import ServiceLifecycle
import Synchronization
import Testing

/// The client as a ServiceLifecycle service. (Its concurrency measurements are `ClientTimingTests`,
/// below, which scripts/test runs alone.)
@Suite("Producer client: graceful shutdown")
struct ConcurrencyTests {
    static let object = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"

    @Test func theServiceDrainsCallsInFlightOnGracefulShutdown() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        let service = CFSignClientService(client: client)
        let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: .init(label: "test")))
        let running = Task { try await group.run() }
        let call = Task { try await client.sign(url: Self.object, expiresIn: 600) }
        try await Task.sleep(for: .milliseconds(20))
        await group.triggerGracefulShutdown()
        #expect(try await call.value.url?.hasPrefix(Self.object) == true, "the call in flight is answered")
        try await running.value
        await #expect(throws: CFSignClientError.closed) { try await client.sign(url: Self.object, expiresIn: 600) }
    }
}

/// The client never blocks its callers: Redis I/O on its own threads, concurrent calls coalesced
/// into few pushes, cancellation, timeouts during a Redis stall. These are measurements that a busy
/// cooperative pool would spoil: scripts/test runs this suite on
/// its own (`swift test --filter ClientTimingTests`), after the others, which start redis-server
/// and worker processes with blocking calls.
@Suite("Producer client: timing, run alone", .serialized)
struct ClientTimingTests {
    static let object = ConcurrencyTests.object

    @Test func aCancelledCallStopsWaitingAtOnceAndItsJobIsNotPushed() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client(defaultTimeout: .seconds(30))
        defer { client.close() }
        let redis = try fleet.connect()
        // Writes wait for 3 s: the first call's push hangs in LPUSH, the second call queues behind it.
        _ = try redis.command(["CLIENT", "PAUSE", "3000", "WRITE"])
        let first = Task { try await client.sign(url: Self.object + "?first", expiresIn: 600) }
        #expect(try await eventually(timeout: .seconds(2.5)) {
            (try redis.command(["CLIENT", "LIST"]).string ?? "").split(separator: "\n").contains { $0.contains("flags=b") && $0.contains("cmd=lpush") }
        }, "the first push is held by the pause")
        let second = Task { try await client.sign(url: Self.object + "?second", expiresIn: 600) }
        #expect(try await eventually { client.waitingCalls == 2 })
        let cancelledAt = ContinuousClock.now
        second.cancel()
        await #expect(throws: CFSignClientError.cancelled) { try await second.value }
        #expect(ContinuousClock.now - cancelledAt < .milliseconds(500), "a cancelled call stops waiting at once")
        #expect(try await eventually { try redis.command(["LLEN", fleet.namespace.jobs]) == .integer(1) })
        try await Task.sleep(for: .milliseconds(300))
        let jobs = try redis.command(["LRANGE", fleet.namespace.jobs, "0", "-1"]).array?.compactMap(\.string) ?? []
        #expect(jobs.count == 1 && jobs[0].contains("?first"), "only the call that was not cancelled was pushed: \(jobs)")
        first.cancel()
    }

    @Test func cooperativeThreadsStayFreeWhileAThousandCallsWaitOnAPausedRedis() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client(defaultTimeout: .seconds(30))
        defer { client.close() }
        let redis = try fleet.connect()
        _ = try redis.command(["CLIENT", "PAUSE", "2000", "WRITE"])
        let n = 1000
        let calls = Task {
            await withTaskGroup(of: Bool.self) { group in
                for i in 0..<n {
                    group.addTask { (try? await client.sign(url: Self.object + "?p=\(i)", expiresIn: 600)) != nil }
                }
                var ok = 0
                for await answered in group where answered { ok += 1 }
                return ok
            }
        }
        // A short CPU-bound task on the cooperative pool, due 300 ms from now.
        let due = ContinuousClock.now + .milliseconds(300)
        let lateness = await Task.detached {
            try? await Task.sleep(until: due)
            var x: UInt64 = 1
            for i in 0..<100_000 { x = x &* 6364136223846793005 &+ UInt64(i) }
            _ = x
            return ContinuousClock.now - due
        }.value
        #expect(lateness < .milliseconds(500), "a CPU task on the cooperative pool finished \(lateness) after it was due while 1,000 calls waited")
        #expect(await calls.value == n, "every call is answered after the pause")
    }

    @Test func aRedisStallFailsCallsAfterTheirTimeoutAndLaterCallsSucceed() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let redis = try fleet.connect()
        _ = try redis.command(["CLIENT", "PAUSE", "3000", "WRITE"])
        let start = ContinuousClock.now
        let results = await client.sign([try SignRequest(url: Self.object, expiresIn: 600)], timeout: .seconds(1))
        let waited = ContinuousClock.now - start
        guard case .failure(let error) = results[0] else { Issue.record("a call during a 3 s write pause succeeded"); return }
        #expect(error == .timeout(namespace: fleet.namespace.name, after: .seconds(1)) || error.description.contains("could not be pushed"), "\(error)")
        #expect(waited < .seconds(3), "the call failed at its own timeout (\(waited)), not when Redis came back")
        try await Task.sleep(for: .seconds(2.5))
        #expect(try await client.sign(url: Self.object, expiresIn: 600, timeout: .seconds(20)).url?.hasPrefix(Self.object) == true)
    }

    /// `calls` of LPUSH the server has run so far (INFO commandstats).
    private func lpushCalls(_ redis: RedisConnection) throws -> Int {
        let info = try redis.command(["INFO", "commandstats"]).string ?? ""
        guard let line = info.split(separator: "\r\n").first(where: { $0.hasPrefix("cmdstat_lpush:") }),
              let calls = line.split(separator: ",").first?.split(separator: "=").last, let n = Int(calls) else { return 0 }
        return n
    }

    @Test func callsQueuedBehindAPushGoOutTogetherInOneLPUSH() async throws {
        // No worker: every LPUSH the server counts is the client's (a worker's scripts LPUSH too).
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let redis = try fleet.connect()
        let before = try lpushCalls(redis)
        let n = 300
        // Writes wait half a second: the first push is held, and every call made meanwhile queues
        // behind it; when the push thread is free again they must go out together.
        _ = try redis.command(["CLIENT", "PAUSE", "500", "WRITE"])
        let calls = Task {
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<n { group.addTask { _ = try? await client.sign(url: Self.object + "?n=\(i)", expiresIn: 600, timeout: .seconds(3)) } }
            }
        }
        #expect(try await eventually { try redis.command(["LLEN", fleet.namespace.jobs]) == .integer(Int64(n)) }, "every job is pushed")
        let pushes = try lpushCalls(redis) - before
        #expect(pushes <= 3, "\(n) calls queued behind one held push went out in \(pushes) LPUSH commands")
        calls.cancel()
    }
}
