import Foundation
import Testing
import CFSignCore
import CFSignRedis
import CFSignWorker

/// How the worker's settings are read: defaults, a `key = value` file, `CFSIGN_*` variables and
/// flags, in that order, and every refusal naming where the value came from.
@Suite("WorkerConfiguration")
struct WorkerConfigurationTests {
    /// A config file with `text`, removed after `body`.
    func withFile<T>(_ text: String, _ body: (String) throws -> T) throws -> T {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfsign-config-\(UUID().uuidString).conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    func message(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let e as ConfigurationError { return e.message } catch { return "\(error)" }
    }

    @Test("with nothing given, the documented defaults hold")
    func defaults() throws {
        let c = try WorkerConfiguration.load(file: nil, environment: [:], overrides: [])
        #expect(c.batchSize == 64)
        #expect(c.defaultHash == .sha1)
        #expect(c.keyUnavailableAfter == 30)
        #expect(c.maximumRecoveries == 3)
        #expect(c.namespace == .default)
    }

    @Test("a flag beats the environment, which beats the file")
    func precedence() throws {
        try withFile("batch_size = 10\nreply_ttl = 60\nmax_recoveries = 5\n") { path in
            let c = try WorkerConfiguration.load(file: path, environment: ["CFSIGN_BATCH_SIZE": "20", "CFSIGN_REPLY_TTL": "90"],
                                                 overrides: [("batch_size", "30")])
            #expect(c.batchSize == 30)
            #expect(c.replyTTL == 90)
            #expect(c.maximumRecoveries == 5)
        }
    }

    @Test("an end-of-line # comment is not part of the value; a # inside a word or quotes is")
    func comments() throws {
        try withFile("audit = stream  # one entry per job\nworker_id = \"w#1\"\n# a whole-line comment\n\nredis = redis://:pa#ss@127.0.0.1:6379 # local\n") { path in
            let c = try WorkerConfiguration.load(file: path, environment: [:], overrides: [])
            #expect(c.audit == .stream)
            #expect(c.workerID == "w#1")
            #expect(c.redis.password == "pa#ss")
        }
    }

    @Test("an unknown key in the file is ignored with a warning naming its line and the nearest key")
    func unknownFileKey() throws {
        let c = try withFile("batch_size = 10\nbatchsize = 20\n") { path in
            try WorkerConfiguration.load(file: path, environment: [:], overrides: [])
        }
        #expect(c.batchSize == 10)
        #expect(c.warnings.count == 1)
        #expect(c.warnings.first.map { $0.contains("line 2") && $0.contains("unknown setting \"batchsize\", ignored") && $0.contains("did you mean batch_size?") } == true)
    }

    @Test("an unknown CFSIGN_ variable is ignored with a warning, like an unknown file key")
    func unknownEnvironmentVariable() throws {
        let c = try WorkerConfiguration.load(file: nil, environment: ["CFSIGN_MAX_LIFETME": "1h", "CFSIGN_BIN": "/x", "HOME": "/root"], overrides: [])
        #expect(c.maximumLifetime == 365 * 86400)
        #expect(c.warnings == ["environment variable CFSIGN_MAX_LIFETME: unknown setting \"max_lifetme\", ignored; did you mean max_lifetime?"])
    }

    @Test("a key far from every setting lists the known ones")
    func unknownKeyListsKnown() throws {
        let c = try WorkerConfiguration.load(file: nil, environment: ["CFSIGN_SOMETHING_ELSE_ENTIRELY": "1"], overrides: [])
        #expect(c.warnings.first?.contains("known settings: redis, namespace") == true)
    }

    @Test("a line without = is refused with its line number")
    func lineWithoutEquals() throws {
        let m = try #require(try withFile("batch_size 10\n") { path in
            message { _ = try WorkerConfiguration.load(file: path, environment: [:], overrides: []) }
        })
        #expect(m.contains("line 1") && m.contains("expected `key = value`"))
    }

    @Test("a bad value names the setting, the value and where it came from", arguments: [
        ("environment", "environment variable CFSIGN_BATCH_SIZE"), ("flag", "flag --batch-size"),
    ])
    func badValueNamesSource(source: String, named: String) throws {
        let environment = source == "environment" ? ["CFSIGN_BATCH_SIZE": "lots"] : [:]
        let overrides: [(key: String, value: String)] = source == "flag" ? [("batch_size", "lots")] : []
        let m = try #require(message { _ = try WorkerConfiguration.load(file: nil, environment: environment, overrides: overrides) })
        #expect(m.contains("batch_size = lots") && m.contains(named), "\(m)")
    }

    @Test("a bad redis URL is refused without echoing the URL, which may hold a password")
    func redisSecretNotEchoed() throws {
        let m = try #require(message {
            _ = try WorkerConfiguration.load(file: nil, environment: ["CFSIGN_REDIS": "http://:hunter2@127.0.0.1:6379"], overrides: [])
        })
        #expect(m.contains("setting redis"))
        #expect(!m.contains("hunter2"))
    }

    @Test("a directory given as the config file is refused with a hint")
    func directoryAsFile() throws {
        let m = try #require(message {
            _ = try WorkerConfiguration.load(file: FileManager.default.temporaryDirectory.path, environment: [:], overrides: [])
        })
        #expect(m.contains("it is a directory"))
    }

    @Test("heartbeat_ttl must be longer than heartbeat_interval and at most three of them")
    func heartbeatAgreement() {
        #expect(message { _ = try WorkerConfiguration.load(file: nil, environment: [:], overrides: [("heartbeat_interval", "2"), ("heartbeat_ttl", "2")]) }?.contains("must be longer than heartbeat_interval") == true)
        #expect(message { _ = try WorkerConfiguration.load(file: nil, environment: [:], overrides: [("heartbeat_interval", "1"), ("heartbeat_ttl", "4")]) }?.contains("at most 3 x heartbeat_interval") == true)
    }

    @Test("block_timeout must be at most half of command_timeout")
    func blockTimeoutAgreement() {
        let m = message { _ = try WorkerConfiguration.load(file: nil, environment: [:], overrides: [("block_timeout", "6"), ("command_timeout", "10")]) }
        #expect(m?.contains("at most half of command_timeout") == true)
    }

    @Test("every setting has its CFSIGN_ variable")
    func environmentNames() {
        #expect(WorkerConfiguration.environmentName("key_unavailable_after") == "CFSIGN_KEY_UNAVAILABLE_AFTER")
        for key in WorkerConfiguration.keys {
            #expect(key == key.lowercased() && !key.contains("-"), "\(key)")
        }
    }

    @Test("signing rules are read from their settings")
    func rules() throws {
        let c = try WorkerConfiguration.load(file: nil, environment: [:], overrides: [
            ("allowed_hosts", "A.example.com, b.example.com"), ("allowed_path_prefixes", "/media/"),
            ("prefix_max_lifetimes", "/media/=1h"), ("resource_wildcards", "none"),
        ])
        #expect(c.rules.allowedHosts == ["a.example.com", "b.example.com"])
        #expect(c.rules.allowedPathPrefixes == ["/media/"])
        #expect(c.rules.prefixLifetimes.first?.seconds == 3600)
        #expect(c.rules.wildcards == .none)
    }
}
