import AsyncHTTPClient
import CFSignHTTP
import Foundation
import NIOCore

/// Forwards an accepted GET/HEAD to an origin (a local S3 server, a web server) and passes its
/// answer back, as CloudFront does: the signing parameters are already stripped, redirects are
/// returned to the viewer, not followed.
///
/// On AsyncHTTPClient, not URLSession: on Linux URLSession is FoundationNetworking over libcurl
/// and GnuTLS, about 4 MB of every cfsign process's RSS (the worker's too, which shares the
/// executable) for the edge's one HTTP client (BENCHMARKS.md, "Memory: what the 38 MB are").
final class OriginBackend: Sendable {
    /// The origin URL without a trailing slash; its path (if any) is put before the request's path,
    /// like CloudFront's origin path.
    let base: String
    /// `--cache-control`, when given: sent only when the origin sends no Cache-Control of its own.
    let fallbackCacheControl: String?
    /// The longest an origin may take for one request, from connecting to its body's last byte.
    let timeout: TimeAmount

    /// Request headers passed on to the origin.
    static let forwardedRequestHeaders = ["Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "Accept", "Accept-Language"]
    /// Response headers passed back to the viewer.
    static let returnedResponseHeaders = [
        "Content-Type", "Content-Range", "ETag", "Last-Modified", "Cache-Control", "Accept-Ranges", "Expires",
        "Content-Disposition", "Content-Language", "Location", "Vary", "x-amz-version-id",
    ]
    /// A body larger than this is not buffered: the viewer gets a 502 naming the limit.
    static let maximumBody = 1 << 30

    /// The process's one client for origins, never shut down (a global lives until exit): no
    /// redirects followed, no decompression (the origin's bytes pass through as they are), no
    /// cookies (AsyncHTTPClient keeps none).
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.timeout = .init(connect: .seconds(30), read: .seconds(30))
        // A refused connection is a 502 now, as CloudFront answers it; retrying the connect would
        // hold the viewer until the connect timeout.
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
        do {
            origin = try await Self.client.execute(outgoing, timeout: timeout)
            body = try await origin.body.collect(upTo: Self.maximumBody)
        } catch is NIOTooManyBytesError {
            let response = EdgeResponses.xmlError(502, code: "BadGateway", message: "The origin \(base) sent a body over \(Self.maximumBody >> 20) MiB, more than the edge buffers")
            return (response, "origin \(target) sent a body over \(Self.maximumBody) bytes")
        } catch {
            let why = Self.describe(error)
            let response = EdgeResponses.xmlError(502, code: "BadGateway", message: "The origin \(base) could not be reached: \(why)")
            return (response, "origin \(target) failed: \(why)")
        }
        var headers: [(name: String, value: String)] = []
        for name in Self.returnedResponseHeaders {
            // A header the origin repeated (Vary) is passed on as one, its values comma-joined.
            let values = origin.headers[name]
            if !values.isEmpty { headers.append((name, values.joined(separator: ", "))) }
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

    /// A failure in words: a system error as its `strerror` text and number (NIO's own description
    /// nests it in the syscall's), anything else as AsyncHTTPClient describes it.
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) + " (errno \(io.errnoCode))" }
        return "\(error)"
    }
}
