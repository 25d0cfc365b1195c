/// W3C Trace Context a job may carry (`traceparent`, `tracestate`; PROTOCOL.md "Trace context"),
/// checked once here at the edge so the worker's tracing code trusts it.
///
/// Strict on purpose: only version `00`, lower-case hex, a trace id and a parent id that are not
/// all zero, as the W3C spec says a receiver must check. Anything else is ignored (the job is
/// still signed, its span is a root): a producer's tracing bug must never cost it a link. Bounded,
/// so a hostile producer cannot make the worker carry kilobytes of context per job.
public struct TraceContext: Sendable, Hashable {
    /// Exactly 55 bytes: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
    public let traceparent: String
    /// At most `maximumTraceStateLength` bytes of printable ASCII; nil when absent or unusable.
    public let tracestate: String?

    /// The W3C limit for `tracestate` (32 list members of at most 256 bytes is the spec's ceiling;
    /// 512 bytes is what it says a propagator must at least carry, and all a worker needs).
    public static let maximumTraceStateLength = 512

    /// nil unless `traceparent` is a valid version-00 header; an unusable `tracestate` alone is
    /// dropped (the W3C rule: a bad `tracestate` never invalidates `traceparent`).
    public init?(traceparent: String, tracestate: String? = nil) {
        guard Self.isValidTraceparent(traceparent) else { return nil }
        self.traceparent = traceparent
        self.tracestate = tracestate.flatMap { Self.isUsableTracestate($0) ? $0 : nil }
    }

    /// The 32 hex digits of the trace id.
    public var traceID: Substring { traceparent.dropFirst(3).prefix(32) }
    /// The 16 hex digits of the parent (the producer's) span id.
    public var parentID: Substring { traceparent.dropFirst(36).prefix(16) }
    /// The trace flags byte (bit 0: sampled).
    public var flags: UInt8 { UInt8(traceparent.suffix(2), radix: 16) ?? 0 }
    public var isSampled: Bool { flags & 1 == 1 }

    static func isValidTraceparent(_ text: String) -> Bool {
        let b = Array(text.utf8)
        guard b.count == 55, b[0] == UInt8(ascii: "0"), b[1] == UInt8(ascii: "0"),
              b[2] == UInt8(ascii: "-"), b[35] == UInt8(ascii: "-"), b[52] == UInt8(ascii: "-") else { return false }
        let traceID = b[3..<35], parentID = b[36..<52], flags = b[53..<55]
        guard traceID.allSatisfy(isLowerHex), parentID.allSatisfy(isLowerHex), flags.allSatisfy(isLowerHex) else { return false }
        return traceID.contains { $0 != UInt8(ascii: "0") } && parentID.contains { $0 != UInt8(ascii: "0") }
    }

    /// Printable ASCII (no control bytes, so it cannot break a log line or a header), bounded.
    /// The member syntax is left to the tracer's propagator, which ignores what it cannot read.
    static func isUsableTracestate(_ text: String) -> Bool {
        let n = text.utf8.count
        return n >= 1 && n <= maximumTraceStateLength && text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
    }

    private static func isLowerHex(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "f"))
    }
}
