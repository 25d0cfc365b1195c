import AsyncHTTPClient
import CFSignHTTP
import Foundation
import NIOCore
import NIOPosix

/// Forwards an accepted GET/HEAD to an origin (a local S3 server, a web server) and passes its
/// answer back, as CloudFront does: the signing parameters are already stripped, redirects are
/// returned to the viewer, not followed.
///
/// On AsyncHTTPClient, not URLSession: on Linux URLSession is FoundationNetworking over libcurl
/// and GnuTLS, about 4 MB of every cfsign process's RSS (the worker's too, which shares the
/// executable) for the edge's one HTTP client (BENCHMARKS.md, "Memory: what a worker's RSS is").
final class OriginBackend: Sendable {
    /// The origin URL without a trailing slash; its path (if any) is put before the request's path,
    /// like CloudFront's origin path.
    let base: String
    /// `--cache-control`, when given: sent only when the origin sends no Cache-Control of its own.
    let fallbackCacheControl: String?
    /// The longest an origin may take for one request, from connecting to its body's last byte
    /// (AsyncHTTPClient's own deadline ends at the response head, so the body is raced against it).
    let timeout: Duration

    /// Request headers passed on to the origin.
    static let forwardedRequestHeaders = ["Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "Accept", "Accept-Language"]
    /// Response headers passed back to the viewer.
    static let returnedResponseHeaders = [
        "Content-Type", "Content-Range", "ETag", "Last-Modified", "Cache-Control", "Accept-Ranges", "Expires",
        "Content-Disposition", "Content-Language", "Location", "Vary", "x-amz-version-id",
    ]
    /// A body larger than this is not buffered: the viewer gets a 502 naming the limit.
    static let maximumBody = 64 << 20
    /// Headers an origin may legitimately repeat, passed on comma-joined; of any other, the first.
    static let listHeaders: Set<String> = ["Vary", "Cache-Control"]

    /// The process's one client for origins, never shut down (a global lives until exit): no
    /// redirects followed, no decompression (the origin's bytes pass through as they are), no
    /// cookies (AsyncHTTPClient keeps none).
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.timeout = .init(connect: .seconds(30), read: .seconds(30))
        // A refused connection is a 502 now, as CloudFront answers it; retrying the connect would
        // hold the viewer until the connect timeout. The price: when a connect fails, requests
        // queued for that origin at that moment fail with it (a local stand-in's trade).
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    init(base: String, fallbackCacheControl: String?, timeout: Double = 120) {
        var trimmed = base
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.base = trimmed
        self.fallbackCacheControl = fallbackCacheControl
        self.timeout = .milliseconds(Int64(timeout * 1000))
    }

    /// Why a request to the origin failed.
    enum Failure: Error {
        case tooLarge
        case timedOut
        case transport(any Error)
    }

    /// Where a request goes: the origin URL + the request's path and stripped query.
    func originURL(forwardURI: String) -> String { base + forwardURI }

    func respond(forwardURI: String, request: HTTPRequest, isHead: Bool) async -> (HTTPResponse, String?) {
        let target = originURL(forwardURI: forwardURI)
        guard URL(string: target) != nil else {
            return (EdgeResponses.badRequest("the request path cannot be forwarded to the origin (not a valid URL: \(target))"), "invalid origin URL \(target)")
        }
        var outgoing = HTTPClientRequest(url: target)
        outgoing.method = isHead ? .HEAD : .GET
        for name in Self.forwardedRequestHeaders {
            if let value = request.header(name) { outgoing.headers.add(name: name, value: value) }
        }
        // Like CloudFront: the viewer's address is appended to any X-Forwarded-For the viewer sent.
        if let peer = request.remoteAddress {
            let xff = request.headers("X-Forwarded-For").joined(separator: ", ")
            outgoing.headers.add(name: "X-Forwarded-For", value: xff.isEmpty ? peer : xff + ", " + peer)
        }
        outgoing.headers.add(name: "Via", value: "1.1 cfsign-edge")
        outgoing.headers.add(name: "User-Agent", value: "cfsign-edge")

        let origin: HTTPClientResponse
        let body: ByteBuffer
        do throws(Failure) {
            (origin, body) = try await fetch(outgoing)
        } catch {
            switch error {
            case .tooLarge:
                let response = EdgeResponses.xmlError(502, code: "BadGateway", message: "The origin \(shownBase) sent a body over \(Self.maximumBody >> 20) MiB, more than the edge buffers")
                return (response, "origin \(target) sent a body over \(Self.maximumBody) bytes")
            case .timedOut:
                let response = EdgeResponses.xmlError(504, code: "GatewayTimeout", message: "The origin \(shownBase) did not answer within \(timeout)")
                return (response, "origin \(target) did not answer within \(timeout)")
            case .transport(let cause):
                // The viewer gets the reason in words; the log gets AsyncHTTPClient's whole account
                // (for a host name it lists the addresses tried, which a viewer has no business seeing).
                let response = EdgeResponses.xmlError(502, code: "BadGateway", message: "The origin \(shownBase) could not be reached: \(Self.reason(cause))")
                return (response, "origin \(target) failed: \(cause)")
            }
        }
        var headers: [(name: String, value: String)] = []
        for name in Self.returnedResponseHeaders {
            let values = origin.headers[name]
            guard let first = values.first else { continue }
            headers.append((name, Self.listHeaders.contains(name) ? values.joined(separator: ", ") : first))
        }
        if origin.headers.first(name: "Cache-Control") == nil, let fallbackCacheControl {
            headers.append(("Cache-Control", fallbackCacheControl))
        }
        let status = Int(origin.status.code)
        if isHead || status == 304 {
            // No body came: pass the origin's length through (for GET it is the body's own).
            if let length = origin.headers.first(name: "Content-Length") { headers.append(("Content-Length", length)) }
        }
        return (HTTPResponse(status: status, headers: headers, body: isHead ? [] : Array(body.readableBytesView)), nil)
    }

    /// The response head and the whole body, within `timeout` for both.
    private func fetch(_ request: HTTPClientRequest) async throws(Failure) -> (HTTPClientResponse, ByteBuffer) {
        let timeout = self.timeout
        do {
            return try await withThrowingTaskGroup(of: (HTTPClientResponse, ByteBuffer)?.self) { group in
                group.addTask {
                    let response = try await Self.client.execute(request, timeout: TimeAmount(timeout))
                    return (response, try await response.body.collect(upTo: Self.maximumBody))
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let fetched = first else { throw Failure.timedOut }
                return fetched
            }
        } catch let failure as Failure {
            throw failure
        } catch is NIOTooManyBytesError {
            throw .tooLarge
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw .timedOut
        } catch {
            throw .transport(error)
        }
    }

    /// The origin URL for a viewer: any `user:password@` replaced by `***@`.
    var shownBase: String {
        guard let scheme = base.range(of: "://"), let at = base[scheme.upperBound...].firstIndex(of: "@"),
              !base[scheme.upperBound..<at].contains("/") else { return base }
        return base[..<scheme.upperBound] + "***" + base[at...]
    }

    /// A failure in words a viewer may see: a system error as its `strerror` text and number (NIO
    /// nests it in the syscall's description, and in one per address tried for a host name), a
    /// TLS or HTTP failure as AsyncHTTPClient names its kind.
    static func reason(_ error: any Error) -> String {
        var error = error
        if let connection = error as? NIOConnectionError, let first = connection.connectionErrors.first?.error { error = first }
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) + " (errno \(io.errnoCode))" }
        if let client = error as? HTTPClientError { return "\(client)" }
        return "the connection failed (\(String(describing: type(of: error))))"
    }
}
