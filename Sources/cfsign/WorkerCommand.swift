import ArgumentParser
import CFSignWorker
import Foundation
import Logging
import ServiceLifecycle

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a signing worker: take jobs from Redis, sign them, answer on each job's reply list.",
        discussion: """
            Runs with no config file and every setting at its default; reads a file only when --config
            names one. Precedence: flags > CFSIGN_* environment variables > config file > defaults.
            Keys come from {NS}:keygroup (cfsign keygroup set). Logs go to stderr.
            SIGTERM/SIGINT: stop taking jobs, answer the ones held, deregister, exit 0; a second signal
            exits at once (held jobs stay in the in-flight list and another worker requeues them).
            Settings (file key / CFSIGN_ variable): \(WorkerConfiguration.keys.joined(separator: ", ")).
            See worker-config/worker.conf for each one's meaning and default.
            """
    )

    @Option(help: ArgumentHelp("Config file (key = value lines).", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("Redis URL: redis://[user:password@]host:port[/db] or unix:///path.sock[?db=N]. Default redis://127.0.0.1:6379.", valueName: "url"))
    var redis: String?

    @Option(help: ArgumentHelp("Namespace: every key starts with {NS}:. Default cfsign.", valueName: "ns"))
    var namespace: String?

    @Option(help: ArgumentHelp("Signing threads. Default: the number of cores.", valueName: "n"))
    var concurrency: Int?

    @Option(help: ArgumentHelp("Jobs taken per round trip (1-1000). Default 64.", valueName: "n"))
    var batchSize: Int?

    @Option(help: ArgumentHelp("Longest link lifetime this worker signs. Default 365d.", valueName: "duration"))
    var maxLifetime: String?

    @Option(help: ArgumentHelp("Worker id. Default <host>-<pid>-<random hex>.", valueName: "id"))
    var workerId: String?

    @Flag(help: "Accept private_key_pem inline in the key group (development and tests only).")
    var allowInlineKeys = false

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. Default info.", valueName: "level"))
    var logLevel: String?

    func run() async throws {
        var overrides: [(key: String, value: String)] = []
        if let redis { overrides.append(("redis", redis)) }
        if let namespace { overrides.append(("namespace", namespace)) }
        if let concurrency { overrides.append(("concurrency", String(concurrency))) }
        if let batchSize { overrides.append(("batch_size", String(batchSize))) }
        if let maxLifetime { overrides.append(("max_lifetime", maxLifetime)) }
        if let workerId { overrides.append(("worker_id", workerId)) }
        if allowInlineKeys { overrides.append(("allow_inline_keys", "true")) }
        if let logLevel { overrides.append(("log_level", logLevel)) }
        let configuration: WorkerConfiguration
        do {
            configuration = try WorkerConfiguration.load(file: config, environment: ProcessInfo.processInfo.environment, overrides: overrides)
        } catch {
            throw Terminal.fail(nil, "worker not started: \(error.message)")
        }
        Logging.bootstrapStderr(level: Logger.Level(rawValue: configuration.logLevel) ?? .info)
        let logger = Logger(label: "cfsign.worker")
        let worker = CFSignWorker.Worker(configuration: configuration, logger: logger)
        var groupConfiguration = ServiceGroupConfiguration(services: [.init(service: worker)], logger: logger)
        groupConfiguration.gracefulShutdownSignals = [.sigterm, .sigint]
        let group = ServiceGroup(configuration: groupConfiguration)
        try await group.run()
    }
}

enum Logging {
    /// Logs go to stderr (stdout is for results, and is block-buffered when it is a file).
    static func bootstrapStderr(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
