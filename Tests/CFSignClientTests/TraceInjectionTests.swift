import CFSignClient
import CFSignCore
import CFSignRedis
import CFSignTestSupport
import Foundation
import Instrumentation
import Testing

/// Issue 19: the client writes the caller's trace context into every job through the process's
/// instrument, so an app that bootstrapped swift-otel gets worker spans under its own for free.
@Suite("Producer client: trace context")
struct TraceInjectionTests {
    static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

    /// The caller's span id, as a tracer would keep it in the context.
    enum CallerSpan: InstrumentationContextKey { typealias Value = String }

    /// A stand-in for swift-otel's W3C propagator: writes the context's span as `traceparent`.
    struct W3CInstrument: Instrument {
        func extract<Carrier, Extract>(_ carrier: Carrier, into context: inout InstrumentationContext, using extractor: Extract)
        where Extract: Extractor, Extract.Carrier == Carrier {}

        func inject<Carrier, Inject>(_ context: InstrumentationContext, into carrier: inout Carrier, using injector: Inject)
        where Inject: Injector, Inject.Carrier == Carrier {
            guard let span = context[CallerSpan.self] else { return }
            injector.inject("00-\(TraceInjectionTests.traceID)-\(span)-01", forKey: "traceparent", into: &carrier)
            injector.inject("vendor=opaque", forKey: "tracestate", into: &carrier)
        }
    }

    /// The process's instrument can be bootstrapped once; this suite is the only one that does.
    static let bootstrapped: Void = { InstrumentationSystem.bootstrap(W3CInstrument()) }()

    private func pushedJob(inSpan span: String?) async throws -> JSONValue {
        _ = Self.bootstrapped
        let fleet = try await Fleet.start(withWorker: false)
        defer { fleet.stop() }
        let client = try fleet.client()
        defer { client.close() }
        let redis = try fleet.connect()
        var context = InstrumentationContext.topLevel
        if let span { context[CallerSpan.self] = span }
        let call = Task {
            try await InstrumentationContext.$current.withValue(span == nil ? nil : context) {
                try await client.sign(url: "https://d111111abcdef8.cloudfront.net/a.pdf", expiresIn: 600, timeout: .seconds(10))
            }
        }
        var taken: [UInt8]?
        _ = try await eventually { taken = try redis.command(["RPOP", fleet.namespace.jobs]).bytes; return taken != nil }
        client.close()
        _ = await call.result
        return try JSONReader.parse(try #require(taken, "no job was pushed"))
    }

    @Test func aJobCarriesTheCallersSpanAsItsTraceparent() async throws {
        let job = try await pushedJob(inSpan: "00f067aa0ba902b7")
        #expect(job[member: "traceparent"] == .string("00-\(Self.traceID)-00f067aa0ba902b7-01"))
        #expect(job[member: "tracestate"] == .string("vendor=opaque"))
    }

    @Test func aJobOutsideAnySpanCarriesNoTraceContext() async throws {
        let job = try await pushedJob(inSpan: nil)
        #expect(job[member: "traceparent"] == nil)
        #expect(job[member: "tracestate"] == nil)
    }

    @Test func aMalformedContextFromTheInstrumentIsNotWritten() async throws {
        // An all-zero span id is invalid W3C: the worker would ignore it, so it is not pushed.
        let job = try await pushedJob(inSpan: "0000000000000000")
        #expect(job[member: "traceparent"] == nil)
    }
}
