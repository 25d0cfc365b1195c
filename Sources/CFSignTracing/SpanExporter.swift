import CFSignCore
import CFSignSync
import Dispatch
import Foundation
import Logging
import Metrics

/// Carries one export body to the collector (`CFSignOTLPHTTP`'s AsyncHTTPClient transport in the
/// worker); kept out of this module so the worker library, which links this one, links no HTTP
/// client (the fuzz build compiles the worker library).
public protocol SpanTransport: Sendable {
    /// POSTs `body`, waiting at most `timeout`; throws `SpanTransportFailure` when no answer came.
    func post(_ body: [UInt8], contentType: String, timeout: Duration) throws(SpanTransportFailure) -> SpanTransportResponse
    /// Called once, after the last `post`.
    func shutdown()
}

public struct SpanTransportResponse: Sendable {
    public var status: Int
    public var reason: String
    public var body: [UInt8]
    public init(status: Int, reason: String, body: [UInt8]) {
        self.status = status
        self.reason = reason
        self.body = body
    }
}

/// Why a batch got no answer, in words for the log (no credentials, no body).
public struct SpanTransportFailure: Error, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
}

/// What the worker needs to export: where and how, and what carries the bytes.
public struct TraceExport: Sendable {
    public let configuration: TraceExportConfiguration
    public let transport: any SpanTransport
    public init(configuration: TraceExportConfiguration, transport: any SpanTransport) {
        self.configuration = configuration
        self.transport = transport
    }
}

/// Batches finished spans and POSTs them to an OTLP/HTTP collector, on a thread of its own
/// (`cfsign-spans`), so that neither a slow collector nor the cost of making spans reaches the
/// threads that sign and reply.
///
/// The queue is bounded (`OTEL_BSP_MAX_QUEUE_SIZE`): what arrives while it is full, and every span
/// of a batch the collector does not take (down, slow past `OTEL_EXPORTER_OTLP_TIMEOUT`, an error
/// status, a partial success), is dropped and counted in `cfsign_spans_dropped_total`, with at most
/// one warning a minute in the log. Nothing is retried: a span is worth less than the next job's
/// time, and a retry would hold the queue for the collector that just failed. A collector that
/// does not answer at all is tried again only after a backoff (1 s, doubling to 30 s), the batches
/// in between dropped unsent: a dead collector costs next to nothing.
///
/// `Item` is what the producer of spans hands over (cheap to make on a hot thread); `makeSpan`
/// turns it into a span on the export thread, or returns nil for one not sampled.
public final class SpanExporter<Item: Sendable>: Sendable {
    public typealias MakeSpan = @Sendable (Item, inout SpanIDGenerator) -> SpanRecord?

    public let configuration: TraceExportConfiguration
    private let request: OTLPTraceRequest
    private let makeSpan: MakeSpan
    private let logger: Logger
    private let transport: any SpanTransport

    private struct Pending {
        var items: [Item] = []
        /// The thread has been woken for a full batch and has not taken the queue since: one
        /// wake per batch, however many submits arrive while a request is in flight.
        var signalled = false
        var finished = false
    }
    private let pending = Locked(Pending())
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private let dropped = Counter(label: "cfsign_spans_dropped_total")
    private let exported = Counter(label: "cfsign_spans_exported_total")
    private let lastWarning = Locked<ContinuousClock.Instant?>(nil)

    public init(_ export: TraceExport, scopeVersion: String, logger: Logger, makeSpan: @escaping MakeSpan) {
        self.configuration = export.configuration
        self.transport = export.transport
        self.request = OTLPTraceRequest(resource: configuration.resource, scopeName: "cfsign", scopeVersion: scopeVersion)
        self.makeSpan = makeSpan
        self.logger = logger
    }

    /// Starts the export thread; `finish()` stops it.
    public func start() {
        NamedThread.start("cfsign-spans") { [self] in
            var ids = SpanIDGenerator()
            // Swapped with the queue under the lock, so taking the queue never allocates there.
            var taken: [Item] = []
            var spans: [SpanRecord] = []
            spans.reserveCapacity(min(configuration.maxExportBatchSize, 4096))
            var sending = Sending()
            while true {
                _ = wake.wait(timeout: .now() + .milliseconds(Int(configuration.scheduleDelay / .milliseconds(1))))
                let finished = pending.withLock { p in
                    swap(&p.items, &taken)
                    p.signalled = false
                    return p.finished
                }
                sending.failedThisTake = false
                let flush = { (spans: inout [SpanRecord]) in
                    if sending.stopBy == nil, self.pending.withLock({ $0.finished }) { sending.stopBy = .now + self.configuration.timeout }
                    self.export(spans, &sending)
                    spans.removeAll(keepingCapacity: true)
                }
                for item in taken {
                    guard let span = makeSpan(item, &ids) else { continue }
                    spans.append(span)
                    if spans.count == configuration.maxExportBatchSize { flush(&spans) }
                }
                if !spans.isEmpty { flush(&spans) }
                taken.removeAll(keepingCapacity: true)
                if finished { break }
            }
            transport.shutdown()
            done.signal()
        }
    }

    /// Queues items for export, dropping (and counting) what does not fit.
    public func submit(_ items: some Collection<Item>) {
        guard !items.isEmpty else { return }
        let limit = configuration.maxQueueSize
        let batch = configuration.maxExportBatchSize
        let (refused, wakeThread) = pending.withLock { p -> (Int, Bool) in
            let room = max(0, limit - p.items.count)
            p.items.append(contentsOf: items.prefix(room))
            let wakeThread = p.items.count >= batch && !p.signalled
            if wakeThread { p.signalled = true }
            return (items.count - min(room, items.count), wakeThread)
        }
        if refused > 0 { drop(refused, reason: "the export queue is full (OTEL_BSP_MAX_QUEUE_SIZE=\(limit))") }
        if wakeThread { wake.signal() }
    }

    /// Exports what is queued, then returns: within about one request timeout once the thread sees
    /// it (plus the rest of a request already in flight); what is not sent by then is dropped.
    public func finish() {
        pending.withLock { $0.finished = true }
        wake.signal()
        done.wait()
    }

    /// What the export thread knows about the collector between batches.
    private struct Sending {
        /// Set once the worker is stopping: what is not sent by then is dropped.
        var stopBy: ContinuousClock.Instant?
        /// One failed batch drops the rest of what was taken: the collector that just failed is
        /// not asked again (and waited for again) until the next pass.
        var failedThisTake = false
        /// After a batch got no answer (the collector down or silent), batches are dropped
        /// without a try until then: a dead collector then costs a connection attempt per
        /// backoff, not one per batch.
        var retryAt: ContinuousClock.Instant?
        var backoff: Duration = .zero
    }

    /// The wait after a first unanswered batch; it doubles per unanswered try, up to
    /// `maximumBackoff`, and any answer resets it.
    static var firstBackoff: Duration { .seconds(1) }
    static var maximumBackoff: Duration { .seconds(30) }

    /// Sends one batch, or drops it (counted) when it cannot be sent now.
    private func export(_ spans: [SpanRecord], _ s: inout Sending) {
        if s.failedThisTake {
            drop(spans.count, reason: "an earlier batch failed")
            return
        }
        let now = ContinuousClock.now
        if let retryAt = s.retryAt, now < retryAt {
            drop(spans.count, reason: "the collector could not be reached; it is tried again \(s.backoff) after the last try")
            return
        }
        var timeout = configuration.timeout
        if let stopBy = s.stopBy {
            let left = stopBy - now
            guard left > .zero else {
                drop(spans.count, reason: "the worker is stopping and the collector did not take them in time")
                return
            }
            timeout = min(timeout, left)
        }
        let body = configuration.encoding == .protobuf ? request.protobuf(spans) : request.json(spans)
        let response: SpanTransportResponse
        do {
            response = try transport.post(body, contentType: configuration.encoding.contentType, timeout: timeout)
        } catch {
            s.failedThisTake = true
            s.backoff = s.backoff == .zero ? Self.firstBackoff : min(s.backoff * 2, Self.maximumBackoff)
            s.retryAt = .now + s.backoff
            drop(spans.count, reason: error.reason)
            return
        }
        s.backoff = .zero
        s.retryAt = nil
        guard (200..<300).contains(response.status) else {
            s.failedThisTake = true
            drop(spans.count, reason: "the collector answered \(response.status) \(response.reason)")
            return
        }
        let rejected = min(Self.rejectedSpans(in: response.body, encoding: configuration.encoding), spans.count)
        if rejected > 0 { drop(rejected, reason: "the collector rejected some (a partial success)") }
        exported.increment(by: spans.count - rejected)
    }

    private func drop(_ count: Int, reason: String) {
        dropped.increment(by: count)
        let now = ContinuousClock.now
        let warn = lastWarning.withLock { last -> Bool in
            if let l = last, now - l < .seconds(60) { return false }
            last = now
            return true
        }
        if warn {
            logger.warning("trace export: spans dropped (counted in cfsign_spans_dropped_total; at most one such line a minute)",
                           metadata: ["spans_dropped": "\(count)", "reason": "\(reason)", "endpoint": "\(configuration.loggedEndpoint)"])
        }
    }

    /// `ExportTraceServiceResponse.partial_success.rejected_spans`, 0 when absent or unreadable.
    static func rejectedSpans(in body: [UInt8], encoding: TraceExportConfiguration.Encoding) -> Int {
        switch encoding {
        case .json:
            guard let v = try? JSONReader.parse(body), case .object(let top) = v,
                  case .object(let partial)? = top.first(where: { $0.0 == "partialSuccess" })?.1,
                  let rejected = partial.first(where: { $0.0 == "rejectedSpans" })?.1 else { return 0 }
            switch rejected {
            case .string(let s): return Int(s).map { $0.clamped(0, Int(Int32.max)) } ?? 0
            case .integer(let n): return Int(n).clamped(0, Int(Int32.max))
            default: return 0
            }
        case .protobuf:
            var reader = ProtobufReader(body[...])
            while let (field, value) = reader.next() {
                guard field == 1, case .bytes(let partial) = value else { continue }
                var inner = ProtobufReader(partial)
                while let (f, v) = inner.next() {
                    if f == 1, case .varint(let n) = v { return Int(truncatingIfNeeded: Int64(bitPattern: n)).clamped(0, Int(Int32.max)) }
                }
            }
            return 0
        }
    }
}

/// Reads protobuf fields, stopping (nil) at the end or at anything malformed: it only reads a
/// collector's short answer.
struct ProtobufReader {
    enum Value { case varint(UInt64), bytes(ArraySlice<UInt8>), other }
    private var rest: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { rest = bytes }

    private mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 7) {
            guard let b = rest.popFirst() else { return nil }
            value |= UInt64(b & 0x7F) << UInt64(shift)
            if b & 0x80 == 0 { return value }
        }
        return nil
    }

    mutating func next() -> (UInt64, Value)? {
        guard let key = varint() else { return nil }
        switch key & 7 {
        case 0: return varint().map { (key >> 3, .varint($0)) }
        case 1: guard rest.count >= 8 else { return nil }; rest = rest.dropFirst(8); return (key >> 3, .other)
        case 5: guard rest.count >= 4 else { return nil }; rest = rest.dropFirst(4); return (key >> 3, .other)
        case 2:
            guard let n = varint(), n <= UInt64(rest.count) else { return nil }
            let value = rest.prefix(Int(n))
            rest = rest.dropFirst(Int(n))
            return (key >> 3, .bytes(value))
        default: return nil
        }
    }
}

extension Comparable {
    fileprivate func clamped(_ low: Self, _ high: Self) -> Self { min(max(self, low), high) }
}
