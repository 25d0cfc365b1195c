import Configuration
import Foundation
import Testing
@testable import CFSignWorker

/// The worker's settings through swift-configuration: any `ConfigReader` gives them, the file's
/// provider serves a changed file after a reload, and `redis` is read as a secret.
@Suite("WorkerConfiguration(reader:)")
struct WorkerConfigurationReaderTests {
    func withFile<T>(_ text: String, _ body: (String) throws -> T) throws -> T {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfsign-reader-\(UUID().uuidString).conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    @Test("a reader over any provider gives the worker its settings")
    func anyProvider() throws {
        let reader = ConfigReader(provider: InMemoryProvider(values: ["batch_size": "12", "resource_wildcards": "none"]))
        let c = try WorkerConfiguration(reader: reader)
        #expect(c.batchSize == 12)
        #expect(c.rules.wildcards == .none)
        #expect(c.replyTTL == 300)
    }

    @Test("a bad value from a reader names the source the caller gives")
    func badValueFromReader() {
        let reader = ConfigReader(provider: InMemoryProvider(values: ["batch_size": "lots"]))
        #expect(throws: ConfigurationError.self) { try WorkerConfiguration(reader: reader, source: { "app.json key \($0)" }) }
        do { _ = try WorkerConfiguration(reader: reader, source: { "app.json key \($0)" }) } catch {
            #expect(error.message.contains("batch_size = lots (app.json key batch_size)"), "\(error.message)")
        }
    }

    @Test("a changed file is served after a reload, under the flags")
    func reloadUnderFlags() throws {
        try withFile("allowed_hosts = a.example.com\nlog_level = info\n") { path in
            let providers = try WorkerConfiguration.Providers(file: path, environment: [:], flags: [("log_level", "error")])
            try "allowed_hosts = b.example.com\nlog_level = debug\n".write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try providers.file?.reload() != nil)
            let c = try providers.configuration()
            #expect(c.rules.allowedHosts == ["b.example.com"])
            #expect(c.logLevel == "error")
        }
    }

    @Test("a reload of a bad file names its line and keeps the values in use")
    func badReloadKeepsValues() throws {
        try withFile("allowed_hosts = a.example.com\n") { path in
            let providers = try WorkerConfiguration.Providers(file: path, environment: [:], flags: [])
            try "allowed_hosts = b.example.com\nallowed_path_prefixes = nope\n".write(toFile: path, atomically: true, encoding: .utf8)
            do { _ = try providers.file?.reload(); Issue.record("a bad file was taken") } catch {
                #expect("\(error)".contains("line 2"), "\(error)")
            }
            #expect(try providers.configuration().rules.allowedHosts == ["a.example.com"])
        }
    }

    @Test("redis is read as a secret, so access logs redact it")
    func redisIsSecret() throws {
        final class Secrets: AccessReporter, @unchecked Sendable {
            var redis: Bool?
            func report(_ event: AccessEvent) {
                if event.metadata.key.components == ["redis"], case .success(let v?) = event.result { redis = v.isSecret }
            }
        }
        let secrets = Secrets()
        let reader = ConfigReader(provider: InMemoryProvider(values: ["redis": "redis://:pw@127.0.0.1:6379"]), accessReporter: secrets)
        _ = try WorkerConfiguration(reader: reader)
        #expect(secrets.redis == true)
    }
}
