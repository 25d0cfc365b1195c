import CFSignSync
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Tracing
#if OTLPExport
import OTel
#endif

/// The worker's trace exporter (issue 19), wired from the standard `OTEL_*` variables: nothing is
/// made, and the worker records nothing, unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. OTLP/HTTP only (protobuf, or JSON when asked):
/// the gRPC exporter would bring grpc-swift and HTTP/2 into every build.
///
/// Built only with the package trait `OTLPExport` (a default trait): swift-otel costs minutes of
/// every clean build, so the sanitizer builds leave it out, and such a binary says so and runs
/// without traces.
enum TraceExport {
    /// What the executable runs: the tracer the worker records on, and the background service that
    /// batches and exports (run it in the worker's ServiceGroup, before the worker, so it shuts
    /// down after it and flushes the last spans).
    struct Backend {
        let tracer: any Tracer
        let service: any Service
    }

    static func isRequested(_ environment: [String: String]) -> Bool {
        let set = { (name: String) in !(environment[name] ?? "").isEmpty }
        return (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            && environment["OTEL_SDK_DISABLED"]?.lowercased() != "true"
            && environment["OTEL_TRACES_EXPORTER"].map { $0.lowercased() != "none" } ?? true
    }

    /// nil when no endpoint is configured (or this binary was built without export).
    static func make(environment: [String: String], logger: Logger) throws(ConfigurationFailure) -> Backend? {
        guard isRequested(environment) else { return nil }
        #if OTLPExport
        let proto = environment["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] ?? environment["OTEL_EXPORTER_OTLP_PROTOCOL"] ?? "http/protobuf"
        guard proto == "http/protobuf" || proto == "http/json" else {
            throw ConfigurationFailure("OTEL_EXPORTER_OTLP_PROTOCOL=\(proto) is not offered: this worker exports traces over OTLP/HTTP only (http/protobuf, the default, or http/json)")
        }
        var configuration = OTel.Configuration.default
        configuration.serviceName = "cfsign-worker"  // OTEL_SERVICE_NAME overrides it
        configuration.metrics.enabled = false         // metrics stay on /metrics (Prometheus)
        configuration.logs.enabled = false
        configuration.diagnosticLogger = .custom(Logger(label: "cfsign.otel") { _ in
            SpanExportDiagnostics(forwardingTo: logger)
        })
        do {
            let backend = try OTel.makeTracingBackend(configuration: configuration)
            return Backend(tracer: backend.factory, service: backend.service)
        } catch {
            throw ConfigurationFailure("cannot export traces: \(error)")
        }
        #else
        logger.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set, but this cfsign was built without trace export (package trait OTLPExport); no spans are recorded")
        return nil
        #endif
    }

    /// The traces endpoint as the worker logs it at start: the traces URL when set, else the base.
    static func loggedEndpoint(_ environment: [String: String]) -> String {
        let traces = environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? ""
        return withoutUserinfo(traces.isEmpty ? environment["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "" : traces)
    }

    /// `url` with its userinfo (`user:password@`, which a hosted collector's URL may carry) replaced
    /// by `***@`: a password must never reach a log. Only the authority is looked at (an `@` in
    /// the path or query is left alone); text without `scheme://` is taken to start with one.
    static func withoutUserinfo(_ url: String) -> String {
        let authorityStart = url.range(of: "://")?.upperBound ?? url.startIndex
        let rest = url[authorityStart...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        return String(url[..<authorityStart]) + "***@" + String(url[url.index(after: at)...])
    }

    struct ConfigurationFailure: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }
}

#if OTLPExport
/// swift-otel's diagnostic log, read for what it drops: its batch span processor keeps at most
/// `OTEL_BSP_MAX_QUEUE_SIZE` spans (2048) and drops the rest, and a batch it cannot send (the
/// collector down or slow past `OTEL_EXPORTER_OTLP_TIMEOUT`) is dropped too; neither is counted
/// anywhere public, only logged. Those log events become `cfsign_spans_dropped_total`, and the
/// worker's log gets one warning a minute instead of one per batch. Pinned to swift-otel 1.6's
/// messages; a change there shows as a failing tests/system/test_tracing.py dead-receiver test.
struct SpanExportDiagnostics: LogHandler {
    private static let dropped = Counter(label: "cfsign_spans_dropped_total")
    private static let lastWarning = LockedDate()

    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    private let logger: Logger

    init(forwardingTo logger: Logger) { self.logger = logger }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let count: Int?
        switch event.message.description {
        case "Failed to export batch.": count = Self.integer(all["batch_size"])
        case "Spans were dropped this iteration because queue was full": count = Self.integer(all["dropped_count"])
        case "Partial success": count = Self.integer(all["rejected_spans"])
        default: count = nil
        }
        if let count, count > 0 {
            Self.dropped.increment(by: count)
            if Self.lastWarning.elapsed(atLeast: 60) {
                var m = all
                m["spans_dropped"] = "\(count)"
                logger.warning("trace export: spans dropped (counted in cfsign_spans_dropped_total; at most one such line a minute)", metadata: m)
            }
            return
        }
        if event.level >= .warning { logger.log(level: event.level, "trace export: \(event.message)", metadata: Self.redacted(all)) }
    }

    /// swift-otel's warnings about the environment carry the variable's value: no header value (an
    /// API key) and no URL's userinfo reaches the worker's log.
    private static func redacted(_ metadata: Logger.Metadata) -> Logger.Metadata {
        let headers = "\(metadata["environment_key"] ?? "")".contains("HEADERS")
        var m: Logger.Metadata = [:]
        for (key, value) in metadata {
            if headers, ["environment_value", "previous_value", "new_value"].contains(key) {
                m[key] = "<redacted>"
            } else if case .string(let text) = value {
                m[key] = .string(TraceExport.withoutUserinfo(text))
            } else {
                m[key] = value
            }
        }
        return m
    }

    private static func integer(_ value: Logger.Metadata.Value?) -> Int? { value.flatMap { Int("\($0)") } }
}

/// The time of the last forwarded warning, shared by every copy of the handler.
final class LockedDate: Sendable {
    private let last = Locked<Date?>(nil)
    func elapsed(atLeast seconds: TimeInterval) -> Bool {
        last.withLock { last in
            let now = Date()
            if let l = last, now.timeIntervalSince(l) < seconds { return false }
            last = now
            return true
        }
    }
}
#endif
