/// One finished span, as the worker exports it: plain values, no tracer behind it.
///
/// cfsign builds these itself instead of going through a swift-distributed-tracing `Tracer`
/// because the worker's spans are made after the fact, from timestamps the job path already took,
/// and swift-otel's tracer cost about 40 µs of CPU per span (two `AsyncStream` hops and an actor
/// per span; BENCHMARKS.md, "Where tracing's cost goes"): as much as the rest of an EC job.
public struct SpanRecord: Sendable, Equatable {
    public var traceID: TraceID
    public var spanID: UInt64
    /// nil: a root span.
    public var parentSpanID: UInt64?
    /// The parent's W3C `tracestate`, passed on as it came (already checked at the edge).
    public var traceState: String?
    public var name: String
    public var kind: Kind
    public var startNanoseconds: UInt64
    public var endNanoseconds: UInt64
    public var attributes: [Attribute]
    public var events: [Event]
    /// nil: the status is UNSET; else ERROR with this message.
    public var errorMessage: String?
    /// The parent came from another process (a producer's `traceparent`).
    public var parentIsRemote: Bool

    public init(traceID: TraceID, spanID: UInt64, parentSpanID: UInt64?, traceState: String? = nil,
                name: String, kind: Kind, startNanoseconds: UInt64, endNanoseconds: UInt64,
                attributes: [Attribute] = [], events: [Event] = [], errorMessage: String? = nil,
                parentIsRemote: Bool = false) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.name = name
        self.kind = kind
        self.startNanoseconds = startNanoseconds
        self.endNanoseconds = endNanoseconds
        self.attributes = attributes
        self.events = events
        self.errorMessage = errorMessage
        self.parentIsRemote = parentIsRemote
    }

    /// OTLP's `Span.SpanKind` numbers.
    public enum Kind: UInt8, Sendable {
        case `internal` = 1, server = 2, client = 3, producer = 4, consumer = 5
    }

    public struct Event: Sendable, Equatable {
        public var name: String
        public var nanoseconds: UInt64
        public var attributes: [Attribute]
        public init(_ name: String, at nanoseconds: UInt64, attributes: [Attribute] = []) {
            self.name = name
            self.nanoseconds = nanoseconds
            self.attributes = attributes
        }
    }
}

/// One span, event or resource attribute.
public struct Attribute: Sendable, Equatable {
    public var key: String
    public var value: Value

    public enum Value: Sendable, Equatable {
        case string(String)
        case int(Int64)
        case bool(Bool)
    }

    public init(_ key: String, _ value: String) { self.key = key; self.value = .string(value) }
    public init(_ key: String, _ value: Int64) { self.key = key; self.value = .int(value) }
    public init(_ key: String, _ value: Int) { self.key = key; self.value = .int(Int64(value)) }
    public init(_ key: String, _ value: Bool) { self.key = key; self.value = .bool(value) }
}

/// A W3C trace id: 16 bytes, kept as two big-endian halves.
public struct TraceID: Sendable, Hashable {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// From 32 hex digits (a `TraceContext`'s trace id, checked there); nil for anything else.
    public init?(hex: Substring) {
        let u = hex.utf8
        guard u.count == 32, let high = UInt64(hex.prefix(16), radix: 16), let low = UInt64(hex.suffix(16), radix: 16) else { return nil }
        self.high = high
        self.low = low
    }

    /// 32 lower-case hex digits, as OTLP/JSON and `traceparent` write it.
    public var hex: String { Hex.digits(high) + Hex.digits(low) }
}

enum Hex {
    /// `value` as 16 lower-case hex digits, zero-padded.
    static func digits(_ value: UInt64) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.utf8.count) + s
    }
}

/// Random trace and span ids for the spans one thread makes.
///
/// xoshiro256** seeded from the system's generator: ids must be unique, not secret, and a
/// `getrandom` call per id would be a system call per span.
public struct SpanIDGenerator: Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init() {
        var system = SystemRandomNumberGenerator()
        s = (system.next(), system.next(), system.next(), system.next())
        if s == (0, 0, 0, 0) { s.0 = 1 }  // the one state xoshiro cannot leave
    }

    private mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Never all zero (W3C: an all-zero id is invalid).
    public mutating func spanID() -> UInt64 {
        while true {
            let id = next()
            if id != 0 { return id }
        }
    }

    public mutating func traceID() -> TraceID {
        while true {
            let id = TraceID(high: next(), low: next())
            if id.high != 0 || id.low != 0 { return id }
        }
    }
}
