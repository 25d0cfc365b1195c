import CFSignClient
import CFSignCore
import CFSignRedis
import CFSignTestSupport
import Foundation
import Synchronization
import Testing

/// How the producer client waits, matches replies and fails, with Redis but (mostly) no worker:
/// the test plays the worker by hand where it needs one.
@Suite("Producer client: waiting, matching and failing")
struct ClientTests {
    static let object = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"

    /// A reply as a worker pushes it (PROTOCOL.md, "Reply").
    /// A reply shaped as a worker writes it for `url` asked with `expiresIn: 600` (the client checks
    /// replies against their request); `tag` tells replies for the same URL apart.
    private func reply(id: String, url: String, tag: Int = 1) -> (json: String, url: String) {
        let expires = Int64(Date().timeIntervalSince1970) + 600
        let signed = url + (url.contains("?") ? "&" : "?") + "Expires=\(expires)&Signature=" + String(repeating: "QUFB", count: tag) + "&Key-Pair-Id=KFAKE"
        return (#"{"id":"\#(id)","ok":true,"url":"\#(signed)","key_id":"KFAKE","expires_at":\#(expires),"policy":"canned"}"#, signed)
    }

    /// Takes the next job from `{NS}:jobs` the way a worker does (from the right), waiting up to 20 s.
    private func takeJob(_ redis: RedisConnection, _ ns: Namespace) async throws -> (id: String, json: JSONValue) {
        var taken: [UInt8]?
        _ = try await eventually { taken = try redis.command(["RPOP", ns.jobs]).bytes; return taken != nil }
        let bytes = try #require(taken, "no job was pushed")
        let json = try JSONReader.parse(bytes)
        guard case .string(let id)? = json[member: "id"] else { throw TestSupportError("job without id: \(json)") }
        return (id, json)
    }

    @Test func noWorkerMeansATimeoutNamingTheNamespace() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client(defaultTimeout: .seconds(60))
        defer { client.close() }
        let start = ContinuousClock.now
        let error = await #expect(throws: CFSignClientError.self) {
            try await client.sign(url: Self.object, expiresIn: 600, timeout: .milliseconds(500))
        }
        let waited = ContinuousClock.now - start
        #expect(error == .timeout(namespace: fleet.namespace.name, after: .milliseconds(500)))
        let text = error?.description ?? ""
        #expect(text.contains("no worker answered within 0.5 s"), "\(text)")
        #expect(text.contains(fleet.namespace.name), "\(text)")
        #expect(waited >= .milliseconds(450))
        // The per-call timeout (0.5 s), not the 60 s default, ended the call. No tighter bound: under
        // ThreadSanitizer a full run keeps the cooperative pool busy for many seconds.
        #expect(waited < .seconds(45))
    }

    @Test func aURLWithAFragmentFailsAtOnceWithoutAWorker() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let start = ContinuousClock.now
        let error = await #expect(throws: CFSignClientError.self) {
            try await client.sign(url: Self.object + "#page=2", expiresIn: 600, timeout: .seconds(30))
        }
        #expect(ContinuousClock.now - start < .seconds(25), "before the 30 s timeout")
        #expect(error?.code == .invalidURL)
        #expect(error?.message.contains("fragment") == true)
        #expect(try fleet.connect().command(["LLEN", fleet.namespace.jobs]) == .integer(0), "nothing was enqueued")
    }

    @Test func theJobOnTheQueueIsTheContractsJSON() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client(clientID: "web-7")
        defer { client.close() }
        let redis = try fleet.connect()
        let call = Task { try await client.signCookies(url: Self.object, expiresIn: 600, ip: "10.1.2.3", hash: .sha256, keyID: "K2", timeout: .seconds(10)) }
        let job = try await takeJob(redis, fleet.namespace)
        #expect(job.json[member: "reply_to"] == .string(fleet.namespace.reply("web-7")))
        #expect(job.json[member: "url"] == .string(Self.object))
        #expect(job.json[member: "expires_in"] == .integer(600))
        #expect(job.json[member: "ip"] == .string("10.1.2.3/32"))
        #expect(job.json[member: "output"] == .string("cookies"))
        #expect(job.json[member: "hash"] == .string("SHA256"))
        #expect(job.json[member: "key_id"] == .string("K2"))
        #expect(job.id.hasPrefix("web-7-"))
        client.close()
        _ = await call.result
    }

    @Test func theFirstReplyForAnIDWinsAndDuplicatesAndUnknownIDsAreDropped() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client(clientID: "dup-test")
        defer { client.close() }
        let redis = try fleet.connect()
        let replyKey = fleet.namespace.reply("dup-test")

        let first = Task { try await client.sign(url: Self.object, expiresIn: 600) }
        let job = try await takeJob(redis, fleet.namespace)
        // In one push, as a worker that crashed and a second worker might leave them: a reply for an id
        // nobody waits for, something that is not a reply, the answer, and a duplicate of the answer.
        let answer = reply(id: job.id, url: Self.object, tag: 1)
        _ = try redis.command(["RPUSH", replyKey,
                               reply(id: "dup-test-unknown", url: Self.object + "?from=nowhere").json,
                               "not json",
                               answer.json,
                               reply(id: job.id, url: Self.object, tag: 2).json])
        let link = try await first.value
        #expect(link.url == answer.url)
        #expect(try await eventually { try redis.command(["LLEN", replyKey]) == .integer(0) }, "the client read and dropped the rest")

        // The client still matches the next job correctly.
        let second = Task { try await client.sign(url: Self.object + "?n=2", expiresIn: 600) }
        let next = try await takeJob(redis, fleet.namespace)
        #expect(next.id != job.id)
        let nextAnswer = reply(id: next.id, url: Self.object + "?n=2", tag: 4)
        _ = try redis.command(["RPUSH", replyKey,
                               reply(id: job.id, url: Self.object, tag: 3).json,
                               nextAnswer.json])
        #expect(try await second.value.url == nextAnswer.url)
    }

    @Test func anInjectedReplyForAnotherObjectIsDroppedAndTheCallKeepsWaiting() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client(clientID: "inject-test")
        defer { client.close() }
        let redis = try fleet.connect()
        let replyKey = fleet.namespace.reply("inject-test")
        let call = Task { try await client.sign(url: Self.object, expiresIn: 600) }
        let job = try await takeJob(redis, fleet.namespace)
        // Another producer of the namespace pushed a job with this id and reply_to for its own URL.
        let injected = reply(id: job.id, url: "https://d111111abcdef8.cloudfront.net/other/secret.pdf")
        let answer = reply(id: job.id, url: Self.object)
        _ = try redis.command(["RPUSH", replyKey, injected.json, answer.json])
        #expect(try await call.value.url == answer.url)
    }

    @Test func aDuplicateOfAnAnsweredReplyDoesNotDisturbLaterCalls() async throws {
        let fleet = try await Fleet.start()
        defer { fleet.stop() }
        let client = try fleet.client(clientID: "dup-worker")
        defer { client.close() }
        let redis = try fleet.connect()
        let replyKey = fleet.namespace.reply("dup-worker")
        let first = try await client.sign(url: Self.object + "?n=1", expiresIn: 600)
        // A duplicate of the answer (LPUSH: at the head, read before anything else) and a reply nobody asked for.
        _ = try redis.command(["LPUSH", replyKey, first.replyJSON, reply(id: "dup-worker-999999", url: Self.object).json])
        let second = try await client.sign(url: Self.object + "?n=2", expiresIn: 600)
        #expect(second.url?.hasPrefix(Self.object + "?n=2&Expires=") == true)
        #expect(second.id != first.id)
        #expect(try await eventually { try redis.command(["LLEN", replyKey]) == .integer(0) })
        let third = try await client.sign(url: Self.object + "?n=3", expiresIn: 600)
        #expect(third.url?.hasPrefix(Self.object + "?n=3&Expires=") == true)
    }

    @Test func aFailureReplyBecomesASigningErrorWithItsCode() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client(clientID: "fail-test")
        defer { client.close() }
        let redis = try fleet.connect()
        let call = Task { try await client.sign(url: Self.object, expiresIn: 600) }
        let job = try await takeJob(redis, fleet.namespace)
        _ = try redis.command(["RPUSH", fleet.namespace.reply("fail-test"),
                               #"{"id":"\#(job.id)","ok":false,"error":{"code":"policy_denied","message":"host not allowed"}}"#])
        #expect(await clientError(of: call) == .signing(code: .policyDenied, message: "host not allowed"))
    }

    @Test func aCodeThisBuildDoesNotKnowIsKeptAsSentNotTurnedIntoInternal() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client(clientID: "new-code-test")
        defer { client.close() }
        let redis = try fleet.connect()
        let call = Task { try await client.sign(url: Self.object, expiresIn: 600) }
        let job = try await takeJob(redis, fleet.namespace)
        _ = try redis.command(["RPUSH", fleet.namespace.reply("new-code-test"),
                               #"{"id":"\#(job.id)","ok":false,"error":{"code":"quota_exceeded","message":"try later"}}"#])
        let error = await clientError(of: call)
        #expect(error == .signing(code: ErrorCode(rawValue: "quota_exceeded"), message: "try later"))
        #expect(error?.code?.isKnown == false)
    }

    @Test func closeMakesWaitingCallsFailWithClosed() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let redis = try fleet.connect()
        let call = Task { try await client.sign(url: Self.object, expiresIn: 600, timeout: .seconds(30)) }
        // Once the job is on the queue the call is waiting for its reply.
        #expect(try await eventually { try redis.command(["LLEN", fleet.namespace.jobs]) == .integer(1) })
        let start = ContinuousClock.now
        client.close()
        #expect(await clientError(of: call) == .closed)
        #expect(ContinuousClock.now - start < .seconds(25), "before the 30 s timeout")
    }

    @Test func callsAfterCloseFailWithClosedAndEnqueueNothing() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client()
        client.close()
        let error = await #expect(throws: CFSignClientError.self) {
            try await client.sign(url: Self.object, expiresIn: 600)
        }
        #expect(error == .closed)
        #expect(try fleet.connect().command(["LLEN", fleet.namespace.jobs]) == .integer(0))
    }

    /// Calls that start while another thread closes the client all end (with `.closed` or a
    /// timeout), none waits forever: registration and close() agree on who fails the waiter.
    @Test func callsRacingCloseAllEndInsteadOfWaitingForever() async throws {
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        for round in 0..<30 {
            let client = try fleet.client()
            let finished = Counter()
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        _ = try? await client.sign(url: Self.object, expiresIn: 600, timeout: .seconds(60))
                        finished.value.add(1, ordering: .relaxed)
                    }
                }
                group.addTask { client.close() }
                // A call that missed close() never ends, not even at its 60 s timeout (the reply thread
                // is gone). 30 s tells that apart from a slow, busy test run, and a hang is then a
                // failure instead of a hung test.
                let deadline = ContinuousClock.now + .seconds(30)
                while finished.value.load(ordering: .relaxed) < 8, ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                #expect(finished.value.load(ordering: .relaxed) == 8, "round \(round): a call raced close() and never ended")
                if finished.value.load(ordering: .relaxed) < 8 { group.cancelAll() }
            }
            if finished.value.load(ordering: .relaxed) < 8 { break }
        }
    }

    @Test func unreachableRedisFailsWhenTheClientIsMade() throws {
        let port = try freeLoopbackPort()
        let error = #expect(throws: CFSignClientError.self) {
            try CFSignClient(redis: "redis://127.0.0.1:\(port)", namespace: "cfsign")
        }
        guard case .redis(let message)? = error else {
            Issue.record("expected .redis, got \(String(describing: error))")
            return
        }
        #expect(message.contains("127.0.0.1:\(port)"))
    }

    @Test func badURLOrNamespaceIsAnInvalidConfiguration() {
        let tls = #expect(throws: CFSignClientError.self) { try CFSignClient(redis: "rediss://host:6380") }
        guard case .invalidConfiguration(let m)? = tls else { Issue.record("got \(String(describing: tls))"); return }
        #expect(m.contains("TLS"))
        let ns = #expect(throws: CFSignClientError.self) { try CFSignClient(redis: "redis://127.0.0.1:1", namespace: "{bad}") }
        guard case .invalidConfiguration(let n)? = ns else { Issue.record("got \(String(describing: ns))"); return }
        #expect(n.contains("namespace"))
    }
}

/// A count shared by concurrent tasks.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
