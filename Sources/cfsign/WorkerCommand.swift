import ArgumentParser
import CFSignWorker
import Foundation
import Logging
import CFSignHTTP
import Metrics
import Prometheus
import Synchronization
import ServiceLifecycle
import CFSignKMS
import CFSignOTLPHTTP
import CFSignTracing

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

            Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set (e.g. http://127.0.0.1:4318), one span per \
            job goes to that OpenTelemetry collector over OTLP/HTTP, a child of the job's \
            traceparent; the other standard OTEL_* variables (protocol, headers, sampler, batch \
            sizes, timeout) are read too, and one that cannot be used stops the worker at start. \
            See docs/TRACING.md.

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

    @Option(help: ArgumentHelp("How long a reply list lives after its last reply (a duration). Default 300.", valueName: "duration"))
    var replyTtl: String?

    @Option(help: ArgumentHelp("{NS}:dead is trimmed to this many entries. Default 10000.", valueName: "n"))
    var deadListLength: String?

    @Option(help: ArgumentHelp("Seconds between heartbeats. Default 2.", valueName: "seconds"))
    var heartbeatInterval: String?

    @Option(help: ArgumentHelp("Seconds a heartbeat lives (> interval, <= 3 x interval). Default 6.", valueName: "seconds"))
    var heartbeatTtl: String?

    @Option(help: ArgumentHelp("Seconds between re-reads of {NS}:keygroup. Default 5.", valueName: "seconds"))
    var keygroupPollInterval: String?

    @Option(help: ArgumentHelp("Seconds a blocking pop waits (<= half of --command-timeout). Default 2.", valueName: "seconds"))
    var blockTimeout: String?

    @Option(help: ArgumentHelp("Seconds any Redis reply may take. Default 10.", valueName: "seconds"))
    var commandTimeout: String?

    @Option(help: ArgumentHelp("Seconds to connect to Redis. Default 5.", valueName: "seconds"))
    var connectTimeout: String?

    @Option(help: ArgumentHelp("Digest for jobs that name none: SHA1 or SHA256. Default SHA1.", valueName: "hash"))
    var defaultHash: String?

    @Flag(help: "Accept key files readable or writable by group or others (mode & 077). Off unless given.")
    var allowGroupReadableKeys = false

    @Option(help: ArgumentHelp("Seconds a job whose HSM or KMS key does not sign is retried before key_unavailable. Default 30.", valueName: "seconds"))
    var keyUnavailableAfter: String?

    @Option(help: ArgumentHelp("Seconds one AWS KMS or STS call may take. Default 2.", valueName: "seconds"))
    var kmsCallTimeout: String?

    @Option(help: ArgumentHelp("KMS Sign calls out at once. Default 64.", valueName: "n"))
    var kmsMaxInFlight: String?

    @Option(name: .customLong("pkcs11-modules"), help: ArgumentHelp("PKCS#11 modules a key's module-path may name (absolute paths, comma-separated). Default: any.", valueName: "paths"))
    var pkcs11Modules: String?

    @Option(help: ArgumentHelp("Seconds this clock may differ from Redis's TIME before a warning. Default 1.", valueName: "seconds"))
    var clockSkewThreshold: String?

    @Option(help: ArgumentHelp("Signatures kept in memory; 0 turns the cache off. Default 4096.", valueName: "n"))
    var signatureCacheSize: String?

    @Option(help: ArgumentHelp("Round expires_in expiries up to this (a duration; 0 off). Default 0.", valueName: "duration"))
    var expiryRounding: String?

    @Option(help: ArgumentHelp("Hosts a link may point at, comma-separated. Default: any.", valueName: "hosts"))
    var allowedHosts: String?

    @Option(help: ArgumentHelp("URL path prefixes a link may point under, comma-separated. Default: any.", valueName: "prefixes"))
    var allowedPathPrefixes: String?

    @Option(help: ArgumentHelp("Shorter lifetimes under prefixes: /prefix=duration, comma-separated. Default: none.", valueName: "list"))
    var prefixMaxLifetimes: String?

    @Option(help: ArgumentHelp("Wildcards in resource: any, within-prefix or none. Default any.", valueName: "mode"))
    var resourceWildcards: String?

    @Option(help: ArgumentHelp("Audit trail of signed and refused jobs: off, stream or log. Default off.", valueName: "mode"))
    var audit: String?

    @Option(help: ArgumentHelp("The audit stream is trimmed to about this many entries. Default 100000.", valueName: "n"))
    var auditStreamLength: String?

    @Option(help: ArgumentHelp("Recoveries of one job from dead workers before it goes to {NS}:dead as poison_job. Default 3.", valueName: "n"))
    var maxRecoveries: String?

    /// Every setting's flag, by setting key: the one list the flags provider is fed from. A
    /// setting of `WorkerConfiguration`'s table without an entry here fails
    /// Tests/system/test_worker_config.py (`--help` must show `--` + key with `_` as `-`).
    /// A Bool flag gives "true" when set; an option gives its text, checked like every source.
    static let settingFlags: [(key: String, value: @Sendable (Worker) -> String?)] = [
        ("redis", { $0.redis }),
        ("namespace", { $0.namespace }),
        ("concurrency", { $0.concurrency.map(String.init) }),
        ("batch_size", { $0.batchSize.map(String.init) }),
        ("max_lifetime", { $0.maxLifetime }),
        ("worker_id", { $0.workerId }),
        ("allow_inline_keys", { $0.allowInlineKeys ? "true" : nil }),
        ("log_level", { $0.logLevel }),
        ("http_address", { $0.httpAddress }),
        ("http_max_connections", { $0.httpMaxConnections.map(String.init) }),
        ("http_idle_timeout", { $0.httpIdleTimeout }),
        ("http_header_timeout", { $0.httpHeaderTimeout }),
        ("reply_ttl", { $0.replyTtl }),
        ("dead_list_length", { $0.deadListLength }),
        ("heartbeat_interval", { $0.heartbeatInterval }),
        ("heartbeat_ttl", { $0.heartbeatTtl }),
        ("keygroup_poll_interval", { $0.keygroupPollInterval }),
        ("block_timeout", { $0.blockTimeout }),
        ("command_timeout", { $0.commandTimeout }),
        ("connect_timeout", { $0.connectTimeout }),
        ("default_hash", { $0.defaultHash }),
        ("allow_group_readable_keys", { $0.allowGroupReadableKeys ? "true" : nil }),
        ("key_unavailable_after", { $0.keyUnavailableAfter }),
        ("kms_call_timeout", { $0.kmsCallTimeout }),
        ("kms_max_in_flight", { $0.kmsMaxInFlight }),
        ("pkcs11_modules", { $0.pkcs11Modules }),
        ("clock_skew_threshold", { $0.clockSkewThreshold }),
        ("signature_cache_size", { $0.signatureCacheSize }),
        ("expiry_rounding", { $0.expiryRounding }),
        ("allowed_hosts", { $0.allowedHosts }),
        ("allowed_path_prefixes", { $0.allowedPathPrefixes }),
        ("prefix_max_lifetimes", { $0.prefixMaxLifetimes }),
        ("resource_wildcards", { $0.resourceWildcards }),
        ("audit", { $0.audit }),
        ("audit_stream_length", { $0.auditStreamLength }),
        ("max_recoveries", { $0.maxRecoveries }),
    ]

    func run() async throws {
        let overrides = Self.settingFlags.compactMap { flag in flag.value(self).map { (key: flag.key, value: $0) } }
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
        // Traces (OTEL_EXPORTER_OTLP_ENDPOINT): the worker's spans, exported over OTLP/HTTP.
        let traces: TraceExport?
        do {
            traces = try TraceExportConfiguration(environment: ProcessInfo.processInfo.environment).map {
                TraceExport(configuration: $0, transport: OTLPHTTPTransport(configuration: $0))
            }
        } catch {
            throw Terminal.fail(nil, "worker not started: \(error.message)")
        }
        if let traces {
            logger.notice("exporting traces over OTLP/HTTP", metadata: ["endpoint": "\(traces.configuration.loggedEndpoint)"])
        }
        let worker = CFSignWorker.Worker(configuration: configuration, logger: logger, traces: traces, version: CFSignVersion.text, kms: AWSKMSKeys())
        // The group stops services in reverse order: the worker first, so /readyz keeps saying
        // "draining" until the worker has answered what it holds (and exported its last spans).
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
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
        if worker.abandonedHeldJobs {
            // `_exit`, not `exit`: the signing threads may still be inside libcrypto, and `exit`
            // runs OpenSSL's atexit cleanup, which frees the locks they are using (a SEGV, seen
            // under ThreadSanitizer). The held jobs stay in the in-flight list either way.
            fflush(nil)
            _exit(1)
        }
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
