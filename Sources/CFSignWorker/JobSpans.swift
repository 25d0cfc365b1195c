import CFSignCore
import CFSignCrypto
import CFSignTracing
import Logging
import Tracing

/// What one job's span is made of, recorded while the job is processed (issue 19).
///
/// Signing lanes only take timestamps and copy a few strings here; the span itself is made by the
/// reply stage once the reply is pushed (`JobSpans.emit`), so a batch never stretches a job's
/// span over its neighbours' work and the lanes do no tracing work. Nothing here may hold a
/// signature, a policy, a URL or key material.
struct JobTrace: Sendable {
    /// The producer's context; nil: the span is a root.
    var context: TraceContext?
    /// Parse of the job's bytes began.
    var parseStart: DefaultTracerClock.Instant
    /// Parse ended and signing (the key's lookup, the policy's checks, the signature) began; nil for
    /// a job refused or dead-lettered by the parser.
    var signStart: DefaultTracerClock.Instant?
    /// Signing ended (with a signature or an error).
    var signEnd: DefaultTracerClock.Instant?
    var jobID: String?
    var keyID: String?
    /// `KeyLocation`'s kind: memory, pkcs11, ... (never the URI).
    var keyLocation: String?
    var keyAlgorithm: String?
    var hash: String?
    /// When each retry of a job whose key's holder did not sign (`key_unavailable`) began, in
    /// order: the job keeps one span from its first try to its reply, the retries are its events.
    var retries: [DefaultTracerClock.Instant] = []

    init(now: DefaultTracerClock.Instant = DefaultTracerClock.now) { parseStart = now }

    /// This try's record as a retry of the same job's `earlier` tries (HSM or KMS retries): the
    /// span starts where the first try started and "parsed" stays the first try's, so the span
    /// covers the whole wait for the key's holder instead of the last try only; this try's start
    /// becomes a retry event; the key, hash and "signed" are this try's (a rotation may have
    /// moved the job to another key).
    func continuing(_ earlier: JobTrace?) -> JobTrace {
        guard let earlier else { return self }
        var t = self
        t.retries = earlier.retries + [parseStart]
        t.parseStart = earlier.parseStart
        if let first = earlier.signStart { t.signStart = first }
        if t.context == nil { t.context = earlier.context }
        return t
    }
}

/// Makes each answered job's span and hands it to the OTLP exporter (`CFSignTracing`), whose
/// thread builds, batches and sends the spans.
///
/// The reply stage only hands over what each span needs (`record`), so making spans never holds
/// the next batch's replies. The hand-over is the exporter's bounded queue
/// (`OTEL_BSP_MAX_QUEUE_SIZE`): past it, spans are dropped and counted in
/// `cfsign_spans_dropped_total`.
final class JobSpans: Sendable {
    private let exporter: SpanExporter<Finished>

    /// What one span is made of; not the outcome itself, whose job bytes and reply need not live on.
    struct Finished: Sendable {
        let trace: JobTrace
        let enqueuedAtMilliseconds: Int64?
        let outcome: String
        let error: ErrorCode?
        let end: DefaultTracerClock.Instant
    }

    /// nil when the sampler samples nothing (`OTEL_TRACES_SAMPLER=always_off`): then the worker
    /// takes no timestamps.
    init?(export: TraceExport, namespace: Namespace, version: String, logger: Logger) {
        let sampler = export.configuration.sampler
        if sampler.samplesNothing { return nil }
        let destination = namespace.jobs
        let name = "process " + namespace.jobs
        exporter = SpanExporter(export, scopeVersion: version, logger: logger) { f, ids in
            Self.span(f, name: name, destination: destination, sampler: sampler, ids: &ids)
        }
    }

    /// Starts the export thread; `finish()` stops it.
    func start() { exporter.start() }

    /// Exports the spans still queued, then returns.
    func finish() { exporter.finish() }

    /// Hands over one span per answered outcome that was traced, ending now (the reply has been pushed).
    func record(_ outcomes: [Outcome]) {
        let end = DefaultTracerClock.now
        var finished: [Finished] = []
        for o in outcomes {
            guard let trace = o.trace else { continue }
            let outcome: String
            switch o.kind {
            case .reply: outcome = o.error == nil ? "ok" : "error"
            case .dead, .deadInRedis: outcome = "dead"
            }
            if finished.isEmpty { finished.reserveCapacity(outcomes.count) }
            finished.append(Finished(trace: trace, enqueuedAtMilliseconds: o.enqueuedAtMilliseconds, outcome: outcome, error: o.error, end: end))
        }
        exporter.submit(finished)
    }

    /// The span of one job, a child of the producer's `traceparent` when the job carried one; nil
    /// when it is not sampled. Nothing here may be a signature, a policy, a URL or key material.
    static func span(_ f: Finished, name: String, destination: String, sampler: Sampler, ids: inout SpanIDGenerator) -> SpanRecord? {
        let trace = f.trace
        let parent = trace.context
        let traceID = parent.flatMap { TraceID(hex: $0.traceID) } ?? ids.traceID()
        guard sampler.isSampled(traceID, parentSampled: parent?.isSampled) else { return nil }
        var a: [Attribute] = [
            Attribute("messaging.system", "redis"),
            Attribute("messaging.destination.name", destination),
            Attribute("messaging.operation", "process"),
            Attribute("messaging.operation.type", "process"),
        ]
        a.reserveCapacity(16)
        if let id = trace.jobID { a.append(Attribute("messaging.message.id", id)) }
        // From the producer's push to this worker starting on the job (the span's start). The
        // producer's clock: a negative or absurd wait (skew) is left out, never clamped.
        if let enqueued = f.enqueuedAtMilliseconds {
            let started = Int64(trace.parseStart.nanosecondsSinceEpoch / 1_000_000)
            let (wait, overflow) = started.subtractingReportingOverflow(enqueued)
            if !overflow, wait >= 0, wait < 86_400_000 { a.append(Attribute("cfsign.queue_wait_ms", wait)) }
        }
        if let keyID = trace.keyID { a.append(Attribute("cfsign.key.id", keyID)) }
        if let location = trace.keyLocation { a.append(Attribute("cfsign.key.location", location)) }
        if let algorithm = trace.keyAlgorithm { a.append(Attribute("cfsign.key.algorithm", algorithm)) }
        if let hash = trace.hash { a.append(Attribute("cfsign.hash", hash)) }
        if !trace.retries.isEmpty { a.append(Attribute("cfsign.retries", trace.retries.count)) }
        a.append(Attribute("cfsign.outcome", f.outcome))
        if let code = f.error {
            a.append(Attribute("error.type", code.rawValue))
            a.append(Attribute("cfsign.error.code", code.rawValue))
        }
        var events: [SpanRecord.Event] = []
        if let signStart = trace.signStart {
            events.append(SpanRecord.Event("parsed", at: signStart.nanosecondsSinceEpoch))
            // Each retry after the key's holder did not sign; `cfsign.attempt` counts from 1 (the first try).
            for (n, at) in trace.retries.enumerated() {
                events.append(SpanRecord.Event("retry", at: at.nanosecondsSinceEpoch, attributes: [
                    Attribute("cfsign.attempt", n + 2),
                    Attribute("error.type", ErrorCode.keyUnavailable.rawValue),
                ]))
            }
            if let signEnd = trace.signEnd { events.append(SpanRecord.Event("signed", at: signEnd.nanosecondsSinceEpoch)) }
        }
        events.append(SpanRecord.Event("reply pushed", at: f.end.nanosecondsSinceEpoch))
        return SpanRecord(
            traceID: traceID, spanID: ids.spanID(),
            parentSpanID: parent.flatMap { UInt64($0.parentID, radix: 16) },
            traceState: parent?.tracestate,
            name: name, kind: .consumer,
            startNanoseconds: trace.parseStart.nanosecondsSinceEpoch, endNanoseconds: f.end.nanosecondsSinceEpoch,
            attributes: a, events: events, errorMessage: f.error?.rawValue,
            parentIsRemote: parent != nil)
    }
}

extension KeyLocation {
    /// The kind of holder, for a span: "memory", "pkcs11" or "kms"; never a URI or an ARN.
    var kind: String {
        switch self {
        case .memory: return "memory"
        case .pkcs11: return "pkcs11"
        case .awsKMS: return "kms"
        }
    }
}
