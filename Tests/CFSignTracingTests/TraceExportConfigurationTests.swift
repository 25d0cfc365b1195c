import Foundation
import Testing
@testable import CFSignTracing

@Suite("OTEL_* variables")
struct TraceExportConfigurationTests {
    private func configuration(_ environment: [String: String]) throws -> TraceExportConfiguration? {
        try TraceExportConfiguration(environment: environment)
    }

    private func failure(_ environment: [String: String]) -> String? {
        do {
            _ = try TraceExportConfiguration(environment: environment)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func nothingIsExportedWithoutAnEndpoint() throws {
        #expect(try configuration([:]) == nil)
        #expect(try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": ""]) == nil)
        #expect(try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"]) == nil)
        #expect(try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"]) == nil)
        #expect(try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "  "]) == nil, "spaces count as unset")
        #expect(try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": " TRUE "]) == nil)
    }

    @Test func theDefaultsAreTheSpecifications() throws {
        let c = try #require(try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"]))
        #expect(c.endpoint == "http://127.0.0.1:4318/v1/traces")
        #expect(c.encoding == .protobuf)
        #expect(c.timeout == .seconds(10))
        #expect(c.scheduleDelay == .seconds(5))
        #expect(c.maxQueueSize == 2048)
        #expect(c.maxExportBatchSize == 512)
        #expect(c.sampler == .default)
        #expect(c.resource.first == Attribute("service.name", "cfsign-worker"))
    }

    @Test func aBaseEndpointGetsTheTracesPathAndATracesEndpointIsUsedAsIs() throws {
        #expect(try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318/otlp/"])?.endpoint == "https://collector.example:4318/otlp/v1/traces")
        let both = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:2/custom"]
        #expect(try configuration(both)?.endpoint == "http://127.0.0.1:2/custom")
    }

    @Test func anEndpointThatIsNotAnHTTPURLIsRefusedWithoutItsPassword() {
        let message = failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://user:secret@127.0.0.1:4318"])
        #expect(message?.contains("OTEL_EXPORTER_OTLP_ENDPOINT") == true)
        #expect(message?.contains("secret") == false)
        #expect(failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://"])?.contains("names no host") == true)
    }

    @Test func grpcAndCompressionAndCertificatesAreRefusedByName() {
        let base = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"]
        #expect(failure(base.merging(["OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"]) { $1 })?.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not offered") == true)
        #expect(failure(base.merging(["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"]) { $1 })?.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") == true)
        #expect(failure(base.merging(["OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"]) { $1 })?.contains("gzip is not offered") == true)
        #expect(failure(base.merging(["OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem"]) { $1 })?.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") == true)
        #expect(try! configuration(base.merging(["OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"]) { $1 })?.encoding == .json)
    }

    @Test func numbersMustBeWholeAndPositive() {
        let base = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"]
        for (name, value) in [("OTEL_EXPORTER_OTLP_TIMEOUT", "0"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "1.5"), ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
                              ("OTEL_BSP_MAX_QUEUE_SIZE", "99999999999999999999"), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "ten")] {
            #expect(failure(base.merging([name: value]) { $1 })?.contains("\(name)=\(value) is not a whole number") == true, "\(name)=\(value)")
        }
        #expect(failure(base.merging(["OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "11"]) { $1 })?.contains("more than OTEL_BSP_MAX_QUEUE_SIZE") == true)
    }

    @Test func theShorterOfTheTwoTimeoutsBoundsARequest() throws {
        let c = try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "500", "OTEL_BSP_EXPORT_TIMEOUT": "200"])
        #expect(c?.timeout == .milliseconds(200))
    }

    @Test func headersArePercentDecodedAndTheTracesVariableWins() throws {
        let c = try #require(try configuration([
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=a%20b , x-team = one",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "X-Team=two",
        ]))
        #expect(c.headers.map { "\($0.name)=\($0.value)" } == ["x-api-key=a b", "X-Team=two"])
    }

    @Test func aHeaderThatCouldSplitTheRequestIsRefusedWithoutItsValue() {
        let message = failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "x-key=secret%0d%0aHost: evil"])
        #expect(message?.contains("control character") == true)
        #expect(message?.contains("secret") == false)
        #expect(failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "secret-without-equals"])?.contains("secret") == false)
    }

    @Test func theServiceNameComesFromItsVariableThenTheResourceThenTheDefault() throws {
        let endpoint = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"]
        let fromResource = try configuration(endpoint.merging(["OTEL_RESOURCE_ATTRIBUTES": "service.name=signer,deployment.environment=prod"]) { $1 })
        #expect(fromResource?.resource.first == Attribute("service.name", "signer"))
        #expect(fromResource?.resource.contains(Attribute("deployment.environment", "prod")) == true)
        #expect(fromResource?.resource.filter { $0.key == "service.name" }.count == 1)
        let both = try configuration(endpoint.merging(["OTEL_RESOURCE_ATTRIBUTES": "service.name=signer", "OTEL_SERVICE_NAME": "edge-signer"]) { $1 })
        #expect(both?.resource.first == Attribute("service.name", "edge-signer"))
        #expect(failure(endpoint.merging(["OTEL_RESOURCE_ATTRIBUTES": "a=%zz"]) { $1 })?.contains("percent-encoded") == true)
    }

    @Test func samplersAreTheSpecificationsSix() throws {
        let endpoint = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"]
        func sampler(_ name: String, _ arg: String? = nil) throws -> Sampler? {
            var env = endpoint.merging(["OTEL_TRACES_SAMPLER": name]) { $1 }
            env["OTEL_TRACES_SAMPLER_ARG"] = arg
            return try configuration(env)?.sampler
        }
        #expect(try sampler("always_off")?.samplesNothing == true)
        #expect(try sampler("parentbased_always_off")?.samplesNothing == false)  // a sampled parent still counts
        #expect(try sampler("parentbased_traceidratio", "0.25")?.ratio == 0.25)
        #expect(failure(endpoint.merging(["OTEL_TRACES_SAMPLER": "jaeger_remote"]) { $1 })?.contains("is not offered") == true)
        #expect(try sampler("always_on", "not a ratio") != nil)  // only the ratio samplers read the argument
        for bad in ["1.5", "-0.1", "nan", "half"] {
            #expect(failure(endpoint.merging(["OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": bad]) { $1 })?.contains("not a ratio") == true, "\(bad)")
        }
    }

    @Test func theLoggedEndpointHidesUserinfoAndTheQuery() {
        #expect(TraceExportConfiguration.redacted("https://user:pw@collector:4318/v1/traces") == "https://***@collector:4318/v1/traces")
        #expect(TraceExportConfiguration.redacted("http://collector:4318/a@b") == "http://collector:4318/a@b")
        #expect(TraceExportConfiguration.redacted("http://u:p#ss@collector/v1") == "http://***@collector/v1")  // an unencoded # in a password
        #expect(TraceExportConfiguration.redacted("http://collector/v1/traces?api-key=secret#x") == "http://collector/v1/traces?***#x")
    }

    @Test func userinfoInTheEndpointBecomesABasicAuthorizationHeader() throws {
        let c = try #require(try configuration(["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://cfsign:p%40ss@127.0.0.1:4318/v1/traces"]))
        #expect(c.endpoint == "http://127.0.0.1:4318/v1/traces")
        #expect(c.headers.map(\.name) == ["Authorization"])
        #expect(c.headers.first?.value == "Basic " + Data("cfsign:p@ss".utf8).base64EncodedString())
        #expect(c.loggedEndpoint == "http://***@127.0.0.1:4318/v1/traces")
        // A header given in the variables wins over the URL's.
        let both = try configuration(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:b@127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t"])
        #expect(both?.headers.map { "\($0.name)=\($0.value)" } == ["authorization=Bearer t"])
    }

    @Test func aBaseEndpointWithAQueryIsRefused() {
        #expect(failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/?key=secret"])?.contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == true)
        #expect(failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/?key=secret"])?.contains("secret") == false)
    }

    @Test func aMisplacedCredentialInTheHeadersIsNeverEchoed() {
        let message = failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "Authorization: Basic dXNlcjpwYXNz=="])
        #expect(message?.contains("member 1") == true)
        #expect(message?.contains("dXNlcjpwYXNz") == false)
    }

    @Test func queueAndBatchSizesAreBounded() {
        #expect(failure(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_BSP_MAX_QUEUE_SIZE": "999999999"])?.contains("from 1 to 100000") == true)
    }

    @Test func percentDecodingIsStrict() {
        #expect(TraceExportConfiguration.percentDecoded("a%20b") == "a b")
        #expect(TraceExportConfiguration.percentDecoded("%+f") == nil)
        #expect(TraceExportConfiguration.percentDecoded("%ff") == nil)  // not UTF-8
        #expect(TraceExportConfiguration.percentDecoded("%2") == nil)
    }
}

@Suite("Sampler")
struct SamplerTests {
    private let low = TraceID(high: 7, low: 1)
    private let high = TraceID(high: 7, low: .max - 1)

    @Test func parentBasedFollowsTheParentsFlag() {
        let s = Sampler(parentBased: true, ratio: 0)
        #expect(s.isSampled(high, parentSampled: true))
        #expect(!s.isSampled(low, parentSampled: false))
        #expect(!s.isSampled(low, parentSampled: nil))  // a root: the ratio, 0
    }

    @Test func aRatioSamplesByTheTraceIDsLastEightBytes() {
        let s = Sampler(parentBased: false, ratio: 0.5)
        #expect(s.isSampled(low, parentSampled: false))   // not parent-based: the parent's flag is ignored
        #expect(!s.isSampled(high, parentSampled: true))
        #expect(Sampler(parentBased: false, ratio: 1).isSampled(TraceID(high: 0, low: .max), parentSampled: nil))
    }
}
