import CFSignCore

/// The body of one OTLP/HTTP export: an `ExportTraceServiceRequest` holding one resource, one
/// instrumentation scope and a batch of spans, in protobuf (`application/x-protobuf`) or in
/// OTLP/JSON (`application/json`).
///
/// Written by hand (field numbers from opentelemetry-proto's `trace.proto`, `common.proto`,
/// `resource.proto`): the messages are few and flat, and swift-protobuf's generated types would be
/// minutes of every clean build for this one message. The system tests decode every body with
/// PyPI's `opentelemetry-proto`, the reference.
public struct OTLPTraceRequest: Sendable {
    public var resource: [Attribute]
    public var scopeName: String
    public var scopeVersion: String

    public init(resource: [Attribute], scopeName: String, scopeVersion: String) {
        self.resource = resource
        self.scopeName = scopeName
        self.scopeVersion = scopeVersion
    }

    // MARK: protobuf

    public func protobuf(_ spans: some Collection<SpanRecord>) -> [UInt8] {
        var w = ProtobufWriter(capacity: 256 + spans.count * 512)
        w.message(1) { w in                       // ExportTraceServiceRequest.resource_spans
            w.message(1) { w in                   // ResourceSpans.resource
                for a in resource { w.attribute(1, a) }  // Resource.attributes
            }
            w.message(2) { w in                   // ResourceSpans.scope_spans
                w.message(1) { w in               // ScopeSpans.scope
                    w.string(1, scopeName)
                    w.string(2, scopeVersion)
                }
                for span in spans { w.message(2) { $0.span(span) } }  // ScopeSpans.spans
            }
        }
        return w.bytes
    }

    // MARK: JSON

    /// OTLP/JSON as the OTLP specification writes it: ids as hex strings, enums as numbers, 64-bit
    /// integers (times, `intValue`) as decimal strings, lowerCamelCase member names.
    public func json(_ spans: some Collection<SpanRecord>) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + spans.count * 768)
        w.beginObject()
        w.key("resourceSpans"); w.beginArray(); w.beginObject()
        w.key("resource"); w.beginObject(); w.key("attributes"); Self.json(resource, &w); w.endObject()
        w.key("scopeSpans"); w.beginArray(); w.beginObject()
        w.key("scope"); w.beginObject(); w.field("name", scopeName); w.field("version", scopeVersion); w.endObject()
        w.key("spans"); w.beginArray()
        for s in spans {
            w.beginObject()
            w.field("traceId", s.traceID.hex)
            w.field("spanId", Hex.digits(s.spanID))
            if let state = s.traceState { w.field("traceState", state) }
            if let parent = s.parentSpanID { w.field("parentSpanId", Hex.digits(parent)) }
            w.field("flags", Int64(s.flags))
            w.field("name", s.name)
            w.field("kind", Int64(s.kind.rawValue))
            w.field("startTimeUnixNano", String(s.startNanoseconds))
            w.field("endTimeUnixNano", String(s.endNanoseconds))
            w.key("attributes"); Self.json(s.attributes, &w)
            w.key("events"); w.beginArray()
            for e in s.events {
                w.beginObject()
                w.field("timeUnixNano", String(e.nanoseconds))
                w.field("name", e.name)
                if !e.attributes.isEmpty { w.key("attributes"); Self.json(e.attributes, &w) }
                w.endObject()
            }
            w.endArray()
            w.key("status"); w.beginObject()
            if let message = s.errorMessage { w.field("message", message); w.field("code", 2) }
            w.endObject()
            w.endObject()
        }
        w.endArray()
        w.endObject(); w.endArray()
        w.endObject(); w.endArray()
        w.endObject()
        return w.bytes
    }

    private static func json(_ attributes: [Attribute], _ w: inout JSONWriter) {
        w.beginArray()
        for a in attributes {
            w.beginObject()
            w.field("key", a.key)
            w.key("value"); w.beginObject()
            switch a.value {
            case .string(let s): w.field("stringValue", s)
            case .int(let n): w.field("intValue", String(n))
            case .bool(let b): w.field("boolValue", b)
            }
            w.endObject()
            w.endObject()
        }
        w.endArray()
    }
}

extension SpanRecord {
    /// `Span.flags`: the W3C trace flags (sampled: only sampled spans are exported) and whether
    /// the parent is known to be remote (bits 8 and 9, `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`
    /// and `..._IS_REMOTE_MASK`).
    var flags: UInt32 { 0x01 | 0x100 | (parentIsRemote ? 0x200 : 0) }
}

/// Protobuf's wire format, as far as OTLP traces need it.
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: UInt64, _ wireType: UInt64) { varint(field << 3 | wireType) }

    /// How many bytes `varint(value)` writes.
    static func varintSize(_ value: UInt64) -> Int {
        var size = 1
        while value >> (7 * UInt64(size)) != 0 && size < 10 { size += 1 }
        return size
    }

    /// A length-delimited field's size on the wire, for a field number under 16 (a one-byte tag).
    static func fieldSize(_ length: Int) -> Int { 1 + varintSize(UInt64(length)) + length }

    mutating func string(_ field: UInt64, _ s: String) {
        tag(field, 2)
        var s = s
        s.withUTF8 { u in
            varint(UInt64(u.count))
            bytes.append(contentsOf: u)
        }
    }

    mutating func fixed64(_ field: UInt64, _ value: UInt64) {
        tag(field, 1)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func fixed32(_ field: UInt64, _ value: UInt32) {
        tag(field, 5)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// A span id: its 8 bytes big-endian, as W3C and OTLP write them.
    mutating func id(_ field: UInt64, _ id: UInt64) {
        tag(field, 2)
        varint(8)
        withUnsafeBytes(of: id.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// A trace id: 16 bytes, big-endian.
    mutating func id(_ field: UInt64, _ id: TraceID) {
        tag(field, 2)
        varint(16)
        withUnsafeBytes(of: id.high.bigEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: id.low.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// A nested message: its body is written in place after a 5-byte length slot (enough for any
    /// length under 4 GiB), which is then shrunk to the length's real size. One move of the body
    /// per nesting level, instead of a buffer per message.
    mutating func message(_ field: UInt64, _ body: (inout ProtobufWriter) -> Void) {
        tag(field, 2)
        let slot = bytes.count
        for _ in 0..<5 { bytes.append(0) }
        body(&self)
        let length = bytes.count - slot - 5
        var size = 1
        while length >> (7 * size) != 0 { size += 1 }
        if size < 5 { bytes.removeSubrange(slot + size ..< slot + 5) }
        var v = UInt64(length)
        for i in 0..<size {
            bytes[slot + i] = UInt8(truncatingIfNeeded: v) | (i < size - 1 ? 0x80 : 0)
            v >>= 7
        }
    }

    /// An attribute as a `KeyValue` field (key 1, value 2 as `AnyValue`). Its sizes are known
    /// up front, so it is written straight, without `message`'s length slot: attributes are most
    /// of a span's fields.
    mutating func attribute(_ field: UInt64, _ a: Attribute) {
        let valueSize: Int
        switch a.value {
        case .string(let s): valueSize = Self.fieldSize(s.utf8.count)
        case .bool: valueSize = 2
        case .int(let n): valueSize = 1 + Self.varintSize(UInt64(bitPattern: n))
        }
        tag(field, 2)
        varint(UInt64(Self.fieldSize(a.key.utf8.count) + Self.fieldSize(valueSize)))
        string(1, a.key)
        tag(2, 2)
        varint(UInt64(valueSize))
        switch a.value {
        case .string(let s): string(1, s)
        case .bool(let b): tag(2, 0); varint(b ? 1 : 0)
        case .int(let n): tag(3, 0); varint(UInt64(bitPattern: n))
        }
    }

    /// `Span`'s fields.
    mutating func span(_ s: SpanRecord) {
        id(1, s.traceID)
        id(2, s.spanID)
        if let state = s.traceState { string(3, state) }
        if let parent = s.parentSpanID { id(4, parent) }
        string(5, s.name)
        tag(6, 0); varint(UInt64(s.kind.rawValue))
        fixed64(7, s.startNanoseconds)
        fixed64(8, s.endNanoseconds)
        for a in s.attributes { attribute(9, a) }
        for e in s.events {
            message(11) { w in
                w.fixed64(1, e.nanoseconds)
                w.string(2, e.name)
                for a in e.attributes { w.attribute(3, a) }
            }
        }
        if let messageText = s.errorMessage {
            message(15) { w in
                w.string(2, messageText)
                w.tag(3, 0); w.varint(2)  // STATUS_CODE_ERROR
            }
        }
        fixed32(16, s.flags)
    }
}
