import AsyncHTTPClient
import CFSignSync
import CFSignTracing
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix

/// POSTs the worker's span batches to the collector over AsyncHTTPClient, from the export thread
/// (which waits on each answer; signing never does).
public final class OTLPHTTPTransport: SpanTransport {
    /// Made on the first export: a worker that never exports (stopped before registering, or
    /// sampling nothing) never opens an HTTP client it would have to shut down.
    private let client = Locked<HTTPClient?>(nil)
    private let endpoint: String
    private let headers: HTTPHeaders
    private let timeout: TimeAmount
    /// A collector's answer is a short status; anything longer is cut off, not buffered.
    static let maximumResponseBytes = 64 * 1024

    public init(configuration: TraceExportConfiguration) {
        endpoint = configuration.endpoint
        var headers = HTTPHeaders()
        for (name, value) in configuration.headers { headers.add(name: name, value: value) }
        self.headers = headers
        timeout = TimeAmount(configuration.timeout)
    }

    private func httpClient() -> HTTPClient {
        client.withLock { client in
            if let c = client { return c }
            var http = HTTPClient.Configuration()
            http.redirectConfiguration = .disallow
            http.decompression = .disabled
            http.timeout = .init(connect: timeout, read: timeout)
            // A refused connection fails its batch at once instead of being retried until the deadline.
            http.connectionPool.retryConnectionEstablishment = false
            let c = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
            client = c
            return c
        }
    }

    public func post(_ body: [UInt8], contentType: String, timeout: Duration) throws(SpanTransportFailure) -> SpanTransportResponse {
        do {
            var request = try HTTPClient.Request(url: endpoint, method: .POST, headers: headers, body: .bytes(body))
            request.headers.replaceOrAdd(name: "Content-Type", value: contentType)
            let accumulator = ResponseAccumulator(request: request, maxBodySize: Self.maximumResponseBytes)
            let response = try httpClient().execute(request: request, delegate: accumulator, deadline: .now() + TimeAmount(timeout)).wait()
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
        } catch is ResponseAccumulator.ResponseTooBigError {
            throw SpanTransportFailure("the collector's answer was over \(Self.maximumResponseBytes / 1024) KiB")
        } catch {
            throw SpanTransportFailure("\(error)")
        }
    }

    public func shutdown() {
        let c = client.withLock { c in
            defer { c = nil }
            return c
        }
        try? c?.syncShutdown()
    }
}
