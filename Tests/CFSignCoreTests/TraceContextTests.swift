import CFSignCore
import Testing

/// Issue 19: a job's W3C trace context is read strictly at the edge; anything malformed is
/// ignored (the job is still signed), never an error.
struct TraceContextTests {
    static let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    func traced(_ extra: String) -> (JobIntake, TraceContext?) {
        var trace: TraceContext? = nil
        let intake = JobParser.parse(Array(job(extra).utf8), namespace: ns, trace: &trace)
        return (intake, trace)
    }

    @Test func aValidTraceparentIsReadWithItsParts() throws {
        let t = try #require(TraceContext(traceparent: Self.parent, tracestate: "congo=t61rcWkgMzE"))
        #expect(t.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(t.parentID == "00f067aa0ba902b7")
        #expect(t.flags == 1 && t.isSampled)
        #expect(t.tracestate == "congo=t61rcWkgMzE")
    }

    @Test(arguments: [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version other than 00
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // the forbidden version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   // all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   // all-zero parent id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   // upper-case hex
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    // trace id too short
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // trailing data on version 00
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",   // wrong separators
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",   // flags not hex
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n", // a control byte
        "", String(repeating: "0", count: 4096),
    ])
    func aMalformedTraceparentIsIgnored(_ text: String) {
        #expect(TraceContext(traceparent: text) == nil)
    }

    @Test func anUnusableTracestateIsDroppedButTheTraceparentKept() throws {
        let long = String(repeating: "a", count: TraceContext.maximumTraceStateLength + 1)
        for bad in [long, "", "k=v\r\nX-Injected: 1", "k=\u{e9}"] {
            let t = try #require(TraceContext(traceparent: Self.parent, tracestate: bad))
            #expect(t.tracestate == nil)
        }
        let limit = String(repeating: "a", count: TraceContext.maximumTraceStateLength)
        #expect(TraceContext(traceparent: Self.parent, tracestate: limit)?.tracestate == limit)
    }

    @Test func aJobCarriesItsTraceContext() throws {
        let (intake, trace) = traced(#""traceparent":"\#(Self.parent)","tracestate":"a=1""#)
        guard case .job(let j) = intake else { Issue.record("not accepted"); return }
        #expect(j.trace?.traceparent == Self.parent && j.trace?.tracestate == "a=1")
        #expect(trace == j.trace)
    }

    @Test func aMalformedOrMistypedTraceContextNeverRefusesTheJob() {
        for extra in [#""traceparent":"garbage""#, #""traceparent":42"#, #""traceparent":{"a":1}"#,
                      #""traceparent":null,"tracestate":"a=1""#, #""tracestate":"a=1""#,
                      #""traceparent":"\#(Self.parent)","tracestate":7"#] {
            let (intake, trace) = traced(extra)
            guard case .job(let j) = intake else { Issue.record("refused: \(extra)"); continue }
            if extra.contains("tracestate\":7") {
                #expect(trace?.traceparent == Self.parent && trace?.tracestate == nil)
            } else {
                #expect(trace == nil && j.trace == nil, "\(extra)")
            }
        }
    }

    @Test func aRefusedJobStillYieldsItsTraceContext() {
        var trace: TraceContext? = nil
        let text = job(url: nil, #""traceparent":"\#(Self.parent)""#)
        guard case .refused = JobParser.parse(Array(text.utf8), namespace: ns, trace: &trace) else { Issue.record("not refused"); return }
        #expect(trace?.traceparent == Self.parent)
    }

    @Test func theParserWithoutTracingReadsNoTraceContext() {
        guard case .job(let j) = intake(job(#""traceparent":"\#(Self.parent)""#)) else { Issue.record("not accepted"); return }
        #expect(j.trace == nil)
    }
}
