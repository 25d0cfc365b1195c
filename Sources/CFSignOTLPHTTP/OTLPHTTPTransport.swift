import AsyncHTTPClient
import CFSignTracing
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix

/// POSTs the worker's span batches to the collector over AsyncHTTPClient, from the export thread
/// (which waits on each answer; signing never does).
public final class OTLPHTTPTransport: SpanTransport {
    private let client: HTTPClient
    private let endpoint: String
    private let headers: HTTPHeaders

    public init(configuration: TraceExportConfiguration) {
        endpoint = configuration.endpoint
        var headers = HTTPHeaders()
        for (name, value) in configuration.headers { headers.add(name: name, value: value) }
        self.headers = headers
        var http = HTTPClient.Configuration()
        http.redirectConfiguration = .disallow
        http.decompression = .disabled
        let timeout = TimeAmount(configuration.timeout)
        http.timeout = .init(connect: timeout, read: timeout)
        // A refused connection fails its batch at once instead of being retried until the deadline.
        http.connectionPool.retryConnectionEstablishment = false
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
    }

    public func post(_ body: [UInt8], contentType: String, timeout: Duration) throws(SpanTransportFailure) -> SpanTransportResponse {
        do {
            var request = try HTTPClient.Request(url: endpoint, method: .POST, headers: headers, body: .bytes(body))
            request.headers.replaceOrAdd(name: "Content-Type", value: contentType)
            let response = try client.execute(request: request, deadline: .now() + TimeAmount(timeout)).wait()
            return SpanTransportResponse(status: Int(response.status.code), reason: response.status.reasonPhrase,
                                         body: response.body.map { Array(buffer: $0) } ?? [])
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw SpanTransportFailure("the collector did not answer in time (OTEL_EXPORTER_OTLP_TIMEOUT)")
        } catch let error as NIOConnectionError {
            // Its description lists every address tried; the first one's errno says why.
            if let io = error.connectionErrors.first?.error as? IOError {
                throw SpanTransportFailure("cannot connect: " + String(cString: strerror(io.errnoCode)))
            }
            throw SpanTransportFailure("cannot connect")
        } catch {
            throw SpanTransportFailure("\(error)")
        }
    }

    public func shutdown() { try? client.syncShutdown() }
}
