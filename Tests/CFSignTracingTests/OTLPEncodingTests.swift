import Testing
import CFSignCore
@testable import CFSignTracing

@Suite("OTLP bodies")
struct OTLPEncodingTests {
    private let request = OTLPTraceRequest(resource: [Attribute("service.name", "cfsign-worker")], scopeName: "cfsign", scopeVersion: "0.1")

    private func span(attributes: Int = 2) -> SpanRecord {
        SpanRecord(traceID: TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!, spanID: 0x00f0_67aa_0ba9_02b7, parentSpanID: 0x0102_0304_0506_0708,
                   traceState: "vendor=opaque", name: "process {cfsign}:jobs", kind: .consumer,
                   startNanoseconds: 1_000, endNanoseconds: 2_000,
                   attributes: (0..<attributes).map { Attribute("k\($0)", String(repeating: "v", count: 40)) } + [Attribute("n", -3), Attribute("b", true)],
                   events: [SpanRecord.Event("parsed", at: 1_500, attributes: [Attribute("cfsign.attempt", 2)])],
                   errorMessage: "ttl_too_long", parentIsRemote: true)
    }

    /// The fields of a message, read back with the exporter's own reader.
    private func fields(_ bytes: ArraySlice<UInt8>) -> [(UInt64, ProtobufReader.Value)] {
        var r = ProtobufReader(bytes)
        var out: [(UInt64, ProtobufReader.Value)] = []
        while let f = r.next() { out.append(f) }
        return out
    }

    private func bytes(_ v: ProtobufReader.Value) -> ArraySlice<UInt8> {
        if case .bytes(let b) = v { return b }
        Issue.record("not a length-delimited field")
        return []
    }

    @Test func aSpanNestsRequestResourceSpansScopeSpansSpanWithItsIdsBigEndian() throws {
        let body = request.protobuf([span(), span(attributes: 10)])
        let top = fields(body[...])
        #expect(top.map(\.0) == [1])
        let resourceSpans = fields(bytes(top[0].1))
        #expect(resourceSpans.map(\.0) == [1, 2])
        let scopeSpans = fields(bytes(resourceSpans[1].1))
        #expect(scopeSpans.map(\.0) == [1, 2, 2])  // the scope, then two spans
        let spanFields = fields(bytes(scopeSpans[1].1))
        let traceID = try #require(spanFields.first { $0.0 == 1 })
        #expect(Array(bytes(traceID.1)) == [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36])
        let parent = try #require(spanFields.first { $0.0 == 4 })
        #expect(Array(bytes(parent.1)) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(spanFields.filter { $0.0 == 9 }.count == 4)  // two strings, an int, a bool
        let status = fields(bytes(try #require(spanFields.first { $0.0 == 15 }).1))
        #expect(status.count == 2)
    }

    @Test func aMessageOverOneTwentySevenBytesGetsATwoByteLength() {
        var w = ProtobufWriter(capacity: 0)
        w.message(1) { $0.string(2, String(repeating: "x", count: 200)) }
        #expect(Array(w.bytes.prefix(3)) == [0x0A, 0xCB, 0x01])  // 203 = 0xCB 0x01
        #expect(w.bytes.count == 1 + 2 + 203)
    }

    @Test func anAttributeIsAKeyValueWhoseLengthsAreRightForLongStringsAndNegativeNumbers() {
        for a in [Attribute("k", String(repeating: "é", count: 100)), Attribute(String(repeating: "k", count: 130), -1), Attribute("b", false)] {
            var w = ProtobufWriter(capacity: 0)
            w.attribute(9, a)
            let top = fields(w.bytes[...])
            #expect(top.count == 1 && top[0].0 == 9)
            let keyValue = fields(bytes(top[0].1))
            #expect(keyValue.map(\.0) == [1, 2])
            #expect(String(decoding: bytes(keyValue[0].1), as: UTF8.self) == a.key)
            let any = fields(bytes(keyValue[1].1))
            #expect(any.count == 1)
            switch (a.value, any.first?.1) {
            case (.string(let s), .bytes(let b)?): #expect(String(decoding: b, as: UTF8.self) == s)
            case (.int(let n), .varint(let v)?): #expect(Int64(bitPattern: v) == n)
            case (.bool(let flag), .varint(let v)?): #expect((v != 0) == flag)
            default: Issue.record("\(a) read back as \(String(describing: any.first))")
            }
        }
    }

    @Test func jsonWritesIdsAsHexAndSixtyFourBitNumbersAsStrings() throws {
        let text = String(decoding: request.json([span()]), as: UTF8.self)
        let value = try JSONReader.parse(text)
        #expect(text.contains(#""traceId":"4bf92f3577b34da6a3ce929d0e0e4736""#))
        #expect(text.contains(#""spanId":"00f067aa0ba902b7""#))
        #expect(text.contains(#""parentSpanId":"0102030405060708""#))
        #expect(text.contains(#""startTimeUnixNano":"1000""#))
        #expect(text.contains(#""intValue":"-3""#))
        #expect(text.contains(#""status":{"message":"ttl_too_long","code":2}"#))
        if case .object = value {} else { Issue.record("not an object") }
    }

    @Test func aPartialSuccessIsReadFromEitherEncoding() {
        // ExportTraceServiceResponse { partial_success { rejected_spans: 3, error_message: "x" } }
        #expect(SpanExporter<Int>.rejectedSpans(in: [0x0A, 0x05, 0x08, 0x03, 0x12, 0x01, 0x78], encoding: .protobuf) == 3)
        #expect(SpanExporter<Int>.rejectedSpans(in: [], encoding: .protobuf) == 0)
        #expect(SpanExporter<Int>.rejectedSpans(in: [0x0A, 0xFF], encoding: .protobuf) == 0)  // truncated: nothing read
        #expect(SpanExporter<Int>.rejectedSpans(in: Array(#"{"partialSuccess":{"rejectedSpans":"4"}}"#.utf8), encoding: .json) == 4)
        #expect(SpanExporter<Int>.rejectedSpans(in: Array("{}".utf8), encoding: .json) == 0)
    }

    @Test func idsAreNeverZeroAndDoNotRepeat() {
        var ids = SpanIDGenerator()
        var seen = Set<UInt64>()
        for _ in 0..<10_000 { seen.insert(ids.spanID()) }
        #expect(seen.count == 10_000)
        #expect(!seen.contains(0))
        #expect(TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")?.hex == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(TraceID(hex: "4bf9") == nil)
    }
}
