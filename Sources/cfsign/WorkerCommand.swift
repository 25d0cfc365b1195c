import ArgumentParser
import CFSignWorker
import Foundation
import Logging
import CFSignHTTP
import Metrics
import Prometheus
import Synchronization
import ServiceLifecycle
import Tracing
import CFSignKMS

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a signing worker: take jobs from Redis, sign them, answer on each job's reply list.",
        discussion: """
            Runs with no config file and every setting at its default; reads a file only when \
            --config names one. Precedence: flags > CFSIGN_* environment variables > config file > \
            defaults. Keys come from {NS}:keygroup (cfsign keygroup set). Logs go to stderr.

            SIGTERM/SIGINT: stop taking jobs, answer the ones held, deregister, exit 0; a second \
            signal exits at once (held jobs stay in the in-flight list and another worker requeues \
            them).

            Settings (file key / CFSIGN_ variable): \
            \(WorkerConfiguration.keys.joined(separator: ", ")). See worker-config/worker.conf for \
            each one's meaning and default.

            Examples:
              cfsign worker --redis redis://127.0.0.1:6379 --namespace cfsign
              cfsign worker --config /etc/cfsign/worker.conf \\
                --http-address 127.0.0.1:9464
            """
    )

    @Option(help: ArgumentHelp("Config file (key = value lines).", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("Redis URL: redis://[user:password@]host:port[/db] (any node of a Redis Cluster), unix:///path.sock[?db=N], or redis+sentinel://host:port[,host:port]/master[/db] (with the same [user:password@] login). Default redis://127.0.0.1:6379.", valueName: "url"))
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

    @Option(help: ArgumentHelp("Serve /metrics (Prometheus), /healthz and /readyz on HOST:PORT. Off unless set.", valueName: "host:port"))
    var httpAddress: String?

    @Option(help: ArgumentHelp("Most connections to --http-address open at once; at the cap a new one replaces the longest-open idle one. Default 256.", valueName: "n"))
    var httpMaxConnections: Int?

    @Option(help: ArgumentHelp("Seconds an HTTP connection may send nothing before it is closed. Default 30.", valueName: "seconds"))
    var httpIdleTimeout: String?

    @Option(help: ArgumentHelp("Seconds an HTTP client has to send a whole request once it started one. Default 10.", valueName: "seconds"))
    var httpHeaderTimeout: String?

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
        if let httpAddress { overrides.append(("http_address", httpAddress)) }
        if let httpMaxConnections { overrides.append(("http_max_connections", String(httpMaxConnections))) }
        if let httpIdleTimeout { overrides.append(("http_idle_timeout", httpIdleTimeout)) }
        if let httpHeaderTimeout { overrides.append(("http_header_timeout", httpHeaderTimeout)) }
        // The parsed flags are the top provider of one ConfigReader, over CFSIGN_* and the file.
        let providers: WorkerConfiguration.Providers
        let configuration: WorkerConfiguration
        do {
            providers = try WorkerConfiguration.Providers(file: config, environment: ProcessInfo.processInfo.environment, flags: overrides)
            configuration = try providers.configuration()
        } catch {
            throw Terminal.fail(nil, "worker not started: \(error.message)")
        }
        let level = LiveLogLevel(Logger.Level(rawValue: configuration.logLevel) ?? .info)
        Logging.bootstrapStderr(level: level)
        let logger = Logger(label: "cfsign.worker")
        for warning in configuration.warnings { logger.warning("\(warning)") }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        // Before any descriptor is opened for HTTP: see HTTPConnectionBudget.
        let limits = HTTPConnectionBudget.limits(for: configuration, logger: logger)
        // Traces (OTEL_EXPORTER_OTLP_ENDPOINT): a tracer for the worker and the exporter's service.
        let traces: TraceExport.Backend?
        do {
            traces = try TraceExport.make(environment: ProcessInfo.processInfo.environment, logger: logger)
        } catch {
            throw Terminal.fail(nil, "worker not started: \(error.message)")
        }
        if let traces {
            // Also for anything else in this process that injects or extracts trace context.
            InstrumentationSystem.bootstrap(traces.tracer)
            logger.notice("exporting traces over OTLP/HTTP", metadata: ["endpoint": "\(ProcessInfo.processInfo.environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? ProcessInfo.processInfo.environment["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "")"])
        }
        let worker = CFSignWorker.Worker(configuration: configuration, logger: logger, tracer: traces?.tracer, kms: AWSKMSKeys())
        // The trace exporter first, then the HTTP endpoint: the group stops services in reverse
        // order, so /readyz keeps saying "draining" until the worker has answered what it holds,
        // and the exporter flushes the last spans after that.
        // An exporter that ends or fails stops tracing, never signing.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = traces.map {
            [.init(service: $0.service, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore)]
        } ?? []
        // The live settings (log level, signing policy) follow the config file while the worker runs.
        if let reloader = ConfigFileReloader(providers: providers, logger: logger, apply: { [worker] new in
            level.set(Logger.Level(rawValue: new.logLevel) ?? .info)
            worker.updateSigningRules(new.rules)
        }) {
            services.append(.init(service: reloader, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
        }
        if let address = configuration.httpAddress, let (host, port) = HTTPServer.parseAddress(address) {
            do {
                let http = try await HTTPServer.start(host: host, port: port, limits: limits, logger: logger) { request in
                    WorkerEndpoints.respond(to: request, worker: worker, registry: registry)
                }
                // The bound port, not the asked one: with port 0 this line is the only place it shows.
                let bound = "\(host.contains(":") ? "[\(host)]" : host):\(http.port)"
                logger.notice("listening on \(bound), serving /metrics, /healthz, /readyz", metadata: ["http_address": "\(bound)"])
                // An endpoint that fails drains the worker (the default would cancel it, leaving
                // its held jobs to the reaper).
                services.append(.init(service: http, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup))
            } catch {
                throw Terminal.fail(nil, "worker not started: cannot listen on http_address \(address): \(error)")
            }
        }
        // When the worker ends (drained, or stopped before registering), the whole group ends.
        services.append(.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup))
        // The first SIGTERM/SIGINT drains, a second one during the drain cancels.
        do {
            try await Lifecycle.run(services, logger: logger)
        } catch where worker.abandonedHeldJobs {
            // Reported by the worker's own log line; the exit status says the drain was cut short.
        }
        if worker.abandonedHeldJobs { throw ExitCode(1) }
    }
}

/// How many HTTP connections the worker serves, given the process's open-files limit.
///
/// The signing path never needs a new descriptor while HTTP clients hold theirs: the worker's
/// Redis connections are opened at start and kept (a reconnect closes the old socket before it
/// opens the new one), and `OpenFileLimit.reserved` descriptors are kept free of HTTP clients for
/// them, key files and reconnects. The soft limit is raised to the hard one first.
enum HTTPConnectionBudget {
    static func limits(for configuration: WorkerConfiguration, logger: Logger) -> HTTPServerLimits {
        var limits = HTTPServerLimits(
            maxConnections: configuration.httpMaxConnections, idleTimeout: configuration.httpIdleTimeout,
            headerTimeout: configuration.httpHeaderTimeout)
        guard let files = OpenFileLimit.raiseToHardLimit() else {
            logger.warning("cannot read the open-files limit (RLIMIT_NOFILE); http_max_connections kept as set")
            return limits
        }
        let cap = OpenFileLimit.connectionCap(wanted: limits.maxConnections, limit: files)
        logger.notice("open files limit", metadata: ["open_files_limit": "\(files)", "http_max_connections": "\(cap)"])
        if cap < limits.maxConnections {
            logger.warning("http_max_connections lowered so that Redis connections and key files always find a file descriptor; raise the open-files limit (LimitNOFILE=) to serve more", metadata: [
                "http_max_connections": "\(limits.maxConnections)", "lowered_to": "\(cap)", "open_files_limit": "\(files)",
                "reserved": "\(OpenFileLimit.reserved)",
            ])
            limits.maxConnections = cap
        }
        return limits
    }
}

/// The worker's HTTP endpoints.
enum WorkerEndpoints {
    static func respond(to request: HTTPRequest, worker: CFSignWorker.Worker, registry: PrometheusCollectorRegistry) -> HTTPResponse {
        guard request.method == "GET" || request.method == "HEAD" else { return .text(405, "only GET and HEAD\n") }
        switch request.path {
        case "/metrics":
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: registry.emitToBuffer())
        case "/healthz":
            return .text(200, "ok\n")
        case "/readyz":
            let (ready, detail) = worker.readiness
            return .text(ready ? 200 : 503, detail + "\n")
        default:
            return .text(404, "not found: /metrics, /healthz, /readyz\n")
        }
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

    /// The same, with a level that can change while the process runs (the worker's `log_level`
    /// follows its config file): every logger made from the bootstrap reads `level`.
    static func bootstrapStderr(level: LiveLogLevel) {
        LoggingSystem.bootstrap { label in
            LiveLevelLogHandler(upstream: StreamLogHandler.standardError(label: label), live: level)
        }
    }
}

/// One log level for the whole process that can be changed at run time. An atomic, not a lock:
/// every log call reads it, the filtered-out debug ones on the signing lanes too.
final class LiveLogLevel: Sendable {
    private static let levels = Logger.Level.allCases
    private let index: Atomic<Int>
    init(_ level: Logger.Level) { index = Atomic(Self.levels.firstIndex(of: level) ?? 2) }
    var current: Logger.Level { Self.levels[index.load(ordering: .relaxed)] }
    func set(_ new: Logger.Level) { index.store(Self.levels.firstIndex(of: new) ?? 2, ordering: .relaxed) }
}

/// A `LogHandler` whose level is the process's `LiveLogLevel`, unless this logger set its own.
struct LiveLevelLogHandler: LogHandler {
    var upstream: StreamLogHandler
    let live: LiveLogLevel
    private var own: Logger.Level?

    init(upstream: StreamLogHandler, live: LiveLogLevel) {
        self.upstream = upstream
        self.live = live
    }

    var logLevel: Logger.Level {
        get { own ?? live.current }
        set { own = newValue }
    }

    var metadata: Logger.Metadata {
        get { upstream.metadata }
        set { upstream.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { upstream.metadataProvider }
        set { upstream.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { upstream[metadataKey: key] }
        set { upstream[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        upstream.log(event: event)
    }
}
