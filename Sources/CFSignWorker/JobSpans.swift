import CFSignCore
import CFSignCrypto
import CFSignSync
import Dispatch
import Foundation
import Metrics
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

/// Makes each answered job's span on a tracer (the process's `InstrumentationSystem.tracer`,
/// swift-otel's when the executable bootstrapped it), on a thread of its own.
///
/// The reply stage only hands over what each span needs (`record`), so making spans never holds
/// the next batch's replies: on a 2-core host it measured about as much of the reply thread's
/// time as the Redis round trip itself (BENCHMARKS.md). The hand-over is bounded
/// (`maximumPending`): past it, spans are dropped and counted in `cfsign_spans_dropped_total`,
/// as swift-otel's own bounded export queue does behind it.
final class JobSpans: Sendable {
    let tracer: any Tracer
    /// `{NS}:jobs`, the list the jobs came from (`messaging.destination.name`).
    let destination: String
    let operationName: String
    /// More than swift-otel's default export queue (2048): a burst that fits there fits here.
    static let maximumPending = 4096

    /// What one span is made of; not the outcome itself, whose job bytes and reply need not live on.
    struct Finished: Sendable {
        let trace: JobTrace
        let enqueuedAtMilliseconds: Int64?
        let outcome: String
        let error: ErrorCode?
        let end: DefaultTracerClock.Instant
    }

    private struct Pending {
        var spans: [Finished] = []
        var finished = false
    }
    private let pending = Locked(Pending())
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private let dropped = Counter(label: "cfsign_spans_dropped_total")

    /// nil when the tracer is a no-op (nothing bootstrapped): then the worker takes no timestamps.
    init?(tracer: any Tracer, namespace: Namespace) {
        if tracer is NoOpTracer { return nil }
        self.tracer = tracer
        self.destination = namespace.jobs
        self.operationName = "process " + namespace.jobs
    }

    /// Starts the thread that makes the spans; `finish()` stops it.
    func start() {
        let thread = Thread { [self] in
            while true {
                wake.wait()
                let (batch, finished) = pending.withLock { p in
                    let batch = p.spans
                    p.spans.removeAll(keepingCapacity: true)
                    return (batch, p.finished)
                }
                for f in batch { emit(f) }
                if finished { break }
            }
            done.signal()
        }
        thread.name = "cfsign-spans"
        thread.start()
    }

    /// Makes the spans still handed over, then returns (the exporter, stopped after the worker,
    /// then flushes them).
    func finish() {
        pending.withLock { $0.finished = true }
        wake.signal()
        done.wait()
    }

    /// Hands over one span per answered outcome that was traced, ending now (the reply has been pushed).
    func record(_ outcomes: [Outcome]) {
        let end = DefaultTracerClock.now
        var refused = 0
        let added = pending.withLock { p -> Bool in
            var added = false
            for o in outcomes {
                guard let trace = o.trace else { continue }
                guard p.spans.count < Self.maximumPending else { refused += 1; continue }
                let outcome: String
                switch o.kind {
                case .reply: outcome = o.error == nil ? "ok" : "error"
                case .dead, .deadInRedis: outcome = "dead"
                }
                p.spans.append(Finished(trace: trace, enqueuedAtMilliseconds: o.enqueuedAtMilliseconds, outcome: outcome, error: o.error, end: end))
                added = true
            }
            return added
        }
        if added { wake.signal() }
        if refused > 0 { dropped.increment(by: refused) }
    }

    private func emit(_ f: Finished) {
        let trace = f.trace
        var context = InstrumentationContext.topLevel
        if let parent = trace.context {
            var carrier = ["traceparent": parent.traceparent]
            if let state = parent.tracestate { carrier["tracestate"] = state }
            tracer.extract(carrier, into: &context, using: DictionaryExtractor())
        }
        let span = tracer.startSpan(operationName, context: context, ofKind: .consumer, at: trace.parseStart)
        // Not sampled (OTEL_TRACES_SAMPLER): nothing of it is exported, so nothing more is built.
        guard span.isRecording else {
            span.end(at: f.end)
            return
        }
        span.updateAttributes { a in
            a["messaging.system"] = "redis"
            a["messaging.destination.name"] = destination
            a["messaging.operation"] = "process"
            a["messaging.operation.type"] = "process"
            if let id = trace.jobID { a["messaging.message.id"] = id }
            // From the producer's push to this worker starting on the job (the span's start). The
            // producer's clock: a negative or absurd wait (skew) is left out, never clamped.
            if let enqueued = f.enqueuedAtMilliseconds {
                let started = Int64(trace.parseStart.nanosecondsSinceEpoch / 1_000_000)
                let (wait, overflow) = started.subtractingReportingOverflow(enqueued)
                if !overflow, wait >= 0, wait < 86_400_000 { a["cfsign.queue_wait_ms"] = wait }
            }
            if let keyID = trace.keyID { a["cfsign.key.id"] = keyID }
            if let location = trace.keyLocation { a["cfsign.key.location"] = location }
            if let algorithm = trace.keyAlgorithm { a["cfsign.key.algorithm"] = algorithm }
            if let hash = trace.hash { a["cfsign.hash"] = hash }
            if !trace.retries.isEmpty { a["cfsign.retries"] = trace.retries.count }
            a["cfsign.outcome"] = f.outcome
            if let code = f.error {
                a["error.type"] = code.rawValue
                a["cfsign.error.code"] = code.rawValue
            }
        }
        if let signStart = trace.signStart {
            span.addEvent(SpanEvent(name: "parsed", at: signStart))
            // Each retry after the key's holder did not sign; `cfsign.attempt` counts from 1 (the first try).
            for (n, at) in trace.retries.enumerated() {
                var attributes = SpanAttributes()
                attributes["cfsign.attempt"] = n + 2
                attributes["error.type"] = ErrorCode.keyUnavailable.rawValue
                span.addEvent(SpanEvent(name: "retry", at: at, attributes: attributes))
            }
            if let signEnd = trace.signEnd { span.addEvent(SpanEvent(name: "signed", at: signEnd)) }
        }
        span.addEvent(SpanEvent(name: "reply pushed", at: f.end))
        if let code = f.error { span.setStatus(SpanStatus(code: .error, message: code.rawValue)) }
        span.end(at: f.end)
    }
}

/// Reads W3C headers out of the two strings a job carries.
struct DictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
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
