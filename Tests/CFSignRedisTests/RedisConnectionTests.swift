import CFSignRedis
import CFSignTestSupport
import Foundation
import Testing

/// Each test starts its own `redis-server` on a free loopback port, so they run in parallel.
@Suite("RedisConnection against a real redis-server")
struct RedisConnectionTests {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    // MARK: Replies

    @Test func statusReply() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        #expect(try redis.command(["SET", "k", "v"]) == .status("OK"))
        #expect(try redis.command(["PING"]) == .status("PONG"))
    }

    @Test func bulkReplyRoundTripsBinaryBytesExactly() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        // NUL bytes, bytes that are not UTF-8, CR/LF, and every byte value.
        let value: [UInt8] = [0x61, 0x00, 0x62, 0xFF, 0xFE, 0xC3, 0x28, 0x80, 0x0D, 0x0A, 0x00] + (0...255).map { UInt8($0) }
        let key: [UInt8] = [0x6B, 0x00, 0xFF]
        #expect(try redis.command(bytes: [bytes("SET"), key, value]) == .status("OK"))
        let reply = try redis.command(bytes: [bytes("GET"), key])
        #expect(reply == .bulk(value))
        #expect(reply.bytes?.count == value.count)
        #expect(try redis.command(bytes: [bytes("STRLEN"), key]) == .integer(Int64(value.count)))
    }

    @Test func emptyBulkReplyIsNotNull() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        _ = try redis.command(["SET", "empty", ""])
        #expect(try redis.command(["GET", "empty"]) == .bulk([]))
    }

    @Test func integerReply() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        #expect(try redis.command(["INCRBY", "n", "41"]) == .integer(41))
        #expect(try redis.command(["DECRBY", "n", "100"]) == .integer(-59))
        #expect(try redis.command(["INCRBY", "big", "9223372036854775807"]).integer == Int64.max)
    }

    @Test func nullReplyForAMissingKey() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let reply = try redis.command(["GET", "missing"])
        #expect(reply == .null)
        #expect(reply.isNull)
    }

    @Test func arrayReplyIncludingNestedAndEmpty() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        _ = try redis.command(["RPUSH", "list", "a", "b", "c"])
        #expect(try redis.command(["LRANGE", "list", "0", "-1"]) == .array([.bulk(bytes("a")), .bulk(bytes("b")), .bulk(bytes("c"))]))
        #expect(try redis.command(["LRANGE", "nothing", "0", "-1"]) == .array([]))
        let nested = try redis.command(["EVAL", "return {1, {2, 'x'}, redis.status_reply('fine')}", "0"])
        #expect(nested == .array([.integer(1), .array([.integer(2), .bulk(bytes("x"))]), .status("fine")]))
    }

    @Test func errorReplyIsReturnedAndTheConnectionStaysUsable() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let unknown = try redis.command(["NOSUCHCOMMAND", "x"])
        #expect(unknown.errorMessage?.hasPrefix("ERR unknown command") == true)
        _ = try redis.command(["SET", "s", "text"])
        let wrongType = try redis.command(["LPUSH", "s", "x"])
        #expect(wrongType.errorMessage?.hasPrefix("WRONGTYPE") == true)
        #expect(!redis.isBroken)
        #expect(try redis.command(["GET", "s"]) == .bulk(bytes("text")))
    }

    // MARK: Pipelines and transactions

    @Test func pipelineOf1000CommandsInOneCall() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let commands = (0..<1000).map { i in [bytes("RPUSH"), bytes("numbers"), bytes(String(i))] }
        let replies = try redis.pipeline(commands)
        #expect(replies == (1...1000).map { RedisReply.integer(Int64($0)) })
        let strings = try redis.pipeline(strings: [["LLEN", "numbers"], ["LINDEX", "numbers", "999"], ["GET", "nothing"]])
        #expect(strings == [.integer(1000), .bulk(bytes("999")), .null])
    }

    @Test func pipelineKeepsReplyOrderAcrossErrors() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let replies = try redis.pipeline(strings: [["SET", "a", "1"], ["INCR", "a"], ["BOGUS"], ["GET", "a"]])
        #expect(replies.count == 4)
        #expect(replies[0] == .status("OK"))
        #expect(replies[1] == .integer(2))
        #expect(replies[2].errorMessage != nil)
        #expect(replies[3] == .bulk(bytes("2")))
    }

    @Test func transactionReturnsTheExecResults() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let results = try redis.transaction([[bytes("SET"), bytes("t"), bytes("1")], [bytes("INCR"), bytes("t")], [bytes("GET"), bytes("t")]])
        #expect(results == [.status("OK"), .integer(2), .bulk(bytes("2"))])
    }

    @Test func transactionReturnsNilWhenAWatchedKeyChanged() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let other = try server.connect()
        _ = try redis.command(["SET", "watched", "before"])
        #expect(try redis.command(["WATCH", "watched"]) == .status("OK"))
        _ = try other.command(["SET", "watched", "changed"])
        let results = try redis.transaction([[bytes("SET"), bytes("watched"), bytes("mine")]])
        #expect(results == nil)
        #expect(try redis.command(["GET", "watched"]) == .bulk(bytes("changed")))
        #expect(!redis.isBroken)
    }

    @Test func transactionWithAnUnqueueableCommandThrowsAServerError() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let error = #expect(throws: RedisError.self) {
            try redis.transaction([[bytes("SET"), bytes("k"), bytes("v")], [bytes("NOSUCHCOMMAND")]])
        }
        #expect(error?.kind == .server)
        #expect(error?.message.contains("unknown command") == true)
        #expect(try redis.command(["GET", "k"]) == .null, "EXECABORT: nothing ran")
    }

    // MARK: Scripts

    private static let incrementBy = RedisScript(name: "increment", source: "return redis.call('INCRBY', KEYS[1], ARGV[1])")

    @Test func evaluateRunsTheScriptBySHA() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        #expect(try redis.evaluate(Self.incrementBy, keys: [bytes("counter")], arguments: [bytes("5")]) == .integer(5))
        #expect(try redis.evaluate(Self.incrementBy, keys: [bytes("counter")], arguments: [bytes("2")]) == .integer(7))
        let stats = try #require(try redis.command(["INFO", "commandstats"]).string)
        #expect(stats.contains("cmdstat_evalsha:calls=2"), "called by SHA")
        #expect(!stats.contains("cmdstat_eval:"), "never sent the source with EVAL")
    }

    @Test func evaluateReloadsTheScriptAfterScriptFlush() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let other = try server.connect()
        #expect(try redis.evaluate(Self.incrementBy, keys: [bytes("counter")], arguments: [bytes("1")]) == .integer(1))
        #expect(try other.command(["SCRIPT", "FLUSH"]) == .status("OK"))
        #expect(try redis.evaluate(Self.incrementBy, keys: [bytes("counter")], arguments: [bytes("1")]) == .integer(2))
        #expect(try redis.command(["GET", "counter"]) == .bulk(bytes("2")), "the NOSCRIPT call did not run twice")
    }

    @Test func pipelinedEvaluateReloadsTheScriptAfterScriptFlush() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let other = try server.connect()
        let echo = RedisScript(name: "echo", source: "return ARGV[1]")
        func calls() -> [RedisScriptCall] {
            [RedisScriptCall(script: Self.incrementBy, keys: [bytes("a")], arguments: [bytes("1")]),
             RedisScriptCall(script: echo, keys: [], arguments: [bytes("hello")]),
             RedisScriptCall(script: Self.incrementBy, keys: [bytes("a")], arguments: [bytes("10")])]
        }
        #expect(try redis.evaluate(calls()) == [.integer(1), .bulk(bytes("hello")), .integer(11)])
        _ = try other.command(["SCRIPT", "FLUSH"])
        #expect(try redis.evaluate(calls()) == [.integer(12), .bulk(bytes("hello")), .integer(22)])
        #expect(try redis.command(["GET", "a"]) == .bulk(bytes("22")), "each call ran exactly once")
    }

    @Test func scriptRuntimeErrorIsAnErrorReply() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        let failing = RedisScript(name: "failing", source: "return redis.call('INCR', KEYS[1])")
        _ = try redis.command(["SET", "text", "abc"])
        let reply = try redis.evaluate(failing, keys: [bytes("text")], arguments: [])
        #expect(reply.errorMessage?.contains("not an integer") == true)
        #expect(try redis.command(["PING"]) == .status("PONG"))
    }

    // MARK: Pub/sub

    @Test func nextMessageReturnsNilAfterTheTimeoutAndTheConnectionLives() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let subscriber = try server.connect(commandTimeout: 1)
        try subscriber.subscribe(["news"])
        let start = ContinuousClock.now
        #expect(try subscriber.nextMessage(timeout: 0.3) == nil)
        let waited = ContinuousClock.now - start
        #expect(waited >= .milliseconds(250) && waited < .seconds(8))  // loose: sanitizer runs are slow
        #expect(!subscriber.isBroken)
        // Longer than the socket timeout: poll() waits, hiredis never times out a read.
        #expect(try subscriber.nextMessage(timeout: 1.5) == nil)
        #expect(!subscriber.isBroken)
        let publisher = try server.connect()
        #expect(try publisher.command(["PUBLISH", "news", "still here"]) == .integer(1))
        let message = try #require(try subscriber.nextMessage(timeout: 2))
        #expect(message.channel == "news")
        #expect(message.payload == bytes("still here"))
    }

    @Test func nextMessageReturnsPublishedMessagesInOrder() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let subscriber = try server.connect()
        try subscriber.subscribe(["a", "b"])
        let publisher = try server.connect()
        let binary: [UInt8] = [0x00, 0xFF, 0x0A, 0x31]
        _ = try publisher.pipeline([[bytes("PUBLISH"), bytes("a"), bytes("1")],
                                    [bytes("PUBLISH"), bytes("b"), binary],
                                    [bytes("PUBLISH"), bytes("a"), bytes("3")]])
        let first = try #require(try subscriber.nextMessage(timeout: 2))
        let second = try #require(try subscriber.nextMessage(timeout: 2))
        let third = try #require(try subscriber.nextMessage(timeout: 2))
        #expect(first.channel == "a" && first.payload == bytes("1"))
        #expect(second.channel == "b" && second.payload == binary)
        #expect(third.channel == "a" && third.payload == bytes("3"))
        #expect(try subscriber.nextMessage(timeout: 0.1) == nil)
    }

    @Test func nextMessageThrowsWhenTheServerGoesAway() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let subscriber = try server.connect()
        try subscriber.subscribe(["news"])
        server.kill()
        let error = #expect(throws: RedisError.self) { try subscriber.nextMessage(timeout: 2) }
        #expect(error?.kind == .connection)
        #expect(subscriber.isBroken)
    }

    // MARK: Login, database, socket

    private static let aclArguments = ["--user", "alice", "on", ">secret", "~*", "&*", "+@all", "--user", "default", "off"]

    @Test func authWithAnACLUserAndTheRightPassword() throws {
        let server = try RedisServer.start(extraArguments: Self.aclArguments)
        defer { server.stop() }
        let redis = try server.connect(username: "alice", password: "secret")
        #expect(try redis.command(["ACL", "WHOAMI"]) == .bulk(bytes("alice")))
        #expect(try redis.command(["SET", "k", "v"]) == .status("OK"))
    }

    @Test func authWithTheWrongPasswordIsAConnectionErrorAboutTheLogin() throws {
        let server = try RedisServer.start(extraArguments: Self.aclArguments)
        defer { server.stop() }
        let error = #expect(throws: RedisError.self) { try server.connect(username: "alice", password: "wrong") }
        #expect(error?.kind == .connection)
        #expect(error?.message.contains("refused the login") == true)
        #expect(error?.message.contains("wrong") == false, "the password is not in the message")
    }

    @Test func passwordOnlyURLLogsInAsTheDefaultUser() throws {
        let server = try RedisServer.start(extraArguments: ["--requirepass", "hunter2"])
        defer { server.stop() }
        let port = try #require(server.port)
        let redis = try RedisConnection(url: RedisURL(parsing: "redis://:hunter2@127.0.0.1:\(port)"))
        #expect(try redis.command(["ACL", "WHOAMI"]) == .bulk(bytes("default")))
        let anonymous = try server.connect()
        #expect(try anonymous.command(["GET", "k"]).errorMessage?.hasPrefix("NOAUTH") == true)
    }

    @Test func databaseFromTheURLIsSelected() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let port = try #require(server.port)
        let db3 = try RedisConnection(url: RedisURL(parsing: "redis://127.0.0.1:\(port)/3"))
        _ = try db3.command(["SET", "where", "three"])
        let db0 = try RedisConnection(url: RedisURL(parsing: "redis://127.0.0.1:\(port)"))
        #expect(try db0.command(["GET", "where"]) == .null)
        #expect(try db0.command(["SELECT", "3"]) == .status("OK"))
        #expect(try db0.command(["GET", "where"]) == .bulk(bytes("three")))
    }

    @Test func databaseOutOfRangeIsAConnectionError() throws {
        let server = try RedisServer.start(extraArguments: ["--databases", "4"])
        defer { server.stop() }
        let error = #expect(throws: RedisError.self) { try server.connect(database: 9) }
        #expect(error?.kind == .connection)
        #expect(error?.message.contains("SELECT 9") == true)
    }

    @Test func unixSocketURLWorks() throws {
        let server = try RedisServer.startUnixSocket()
        defer { server.stop() }
        guard case .unix(let path) = server.url.endpoint else { Issue.record("not a unix socket server"); return }
        let redis = try RedisConnection(url: RedisURL(parsing: "unix://\(path)?db=2"))
        _ = try redis.command(["SET", "over", "socket"])
        #expect(try redis.command(["GET", "over"]) == .bulk(bytes("socket")))
        let db0 = try RedisConnection(url: RedisURL(parsing: "unix://\(path)"))
        #expect(try db0.command(["GET", "over"]) == .null)
        #expect(try db0.command(["DBSIZE"]) == .integer(0))
    }

    // MARK: Failures

    @Test func connectionRefusedIsAQuickConnectionError() throws {
        let port = try freeLoopbackPort()
        let start = ContinuousClock.now
        let error = #expect(throws: RedisError.self) {
            try RedisConnection(url: RedisURL(endpoint: .tcp(host: "127.0.0.1", port: port)), connectTimeout: 5)
        }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(error?.kind == .connection)
        #expect(error?.isConnectionError == true)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
    }

    @Test func missingUnixSocketIsAConnectionError() throws {
        let error = #expect(throws: RedisError.self) {
            try RedisConnection(url: RedisURL(endpoint: .unix(path: "/nonexistent/cfsign-test.sock")))
        }
        #expect(error?.kind == .connection)
    }

    @Test func afterTheServerIsKilledTheNextCommandThrowsAndTheConnectionIsBroken() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        #expect(try redis.command(["PING"]) == .status("PONG"))
        server.kill()
        let error = #expect(throws: RedisError.self) { try redis.command(["PING"]) }
        #expect(error?.kind == .connection)
        #expect(redis.isBroken)
        let again = #expect(throws: RedisError.self) { try redis.command(["PING"]) }
        #expect(again?.kind == .connection, "a broken connection stays broken")
    }

    @Test func writingToAKilledServerThrowsInsteadOfDyingOfSIGPIPE() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect()
        #expect(try redis.command(["PING"]) == .status("PONG"))
        server.kill()
        // Several megabytes: the first write draws a reset, later writes hit EPIPE (SIGPIPE if not ignored).
        let big = [UInt8](repeating: 0x78, count: 8 << 20)
        let error = #expect(throws: RedisError.self) {
            try redis.pipeline([[bytes("SET"), bytes("a"), big], [bytes("SET"), bytes("b"), big]])
        }
        #expect(error?.kind == .connection)
        #expect(redis.isBroken)
    }

    @Test func blpopWithABlockTimeoutBelowTheCommandTimeoutReturnsNull() throws {
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect(commandTimeout: 2)
        let start = ContinuousClock.now
        #expect(try redis.command(["BLPOP", "empty-list", "0.3"]) == .null)
        #expect(ContinuousClock.now - start >= .milliseconds(250))
        #expect(!redis.isBroken)
        #expect(try redis.command(["PING"]) == .status("PONG"))
        _ = try redis.command(["RPUSH", "full-list", "x"])
        #expect(try redis.command(["BLPOP", "full-list", "0.3"]) == .array([.bulk(bytes("full-list")), .bulk(bytes("x"))]))
    }

    @Test func blockingLongerThanTheCommandTimeoutLosesTheConnection() throws {
        // The documented limit (interop-facts): hiredis fails the read and the context is dead, so
        // callers keep block timeouts well below the command timeout.
        let server = try RedisServer.start()
        defer { server.stop() }
        let redis = try server.connect(commandTimeout: 0.3)
        let error = #expect(throws: RedisError.self) { try redis.command(["BLPOP", "empty-list", "2"]) }
        #expect(error?.kind == .connection)
        #expect(redis.isBroken)
    }
}
