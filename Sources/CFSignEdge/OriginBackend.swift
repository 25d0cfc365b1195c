import CFSignHTTP
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Forwards an accepted GET/HEAD to an origin (a local S3 server, a web server) and passes its
/// answer back, as CloudFront does: the signing parameters are already stripped, redirects are
/// returned to the viewer, not followed.
final class OriginBackend: Sendable {
    /// The origin URL without a trailing slash; its path (if any) is put before the request's path,
    /// like CloudFront's origin path.
    let base: String
    /// `--cache-control`, when given: sent only when the origin sends no Cache-Control of its own.
    let fallbackCacheControl: String?
    private let session: URLSession

    /// Request headers passed on to the origin.
    static let forwardedRequestHeaders = ["Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "Accept", "Accept-Language"]
    /// Response headers passed back to the viewer.
    static let returnedResponseHeaders = [
        "Content-Type", "Content-Range", "ETag", "Last-Modified", "Cache-Control", "Accept-Ranges", "Expires",
        "Content-Disposition", "Content-Language", "Location", "Vary", "x-amz-version-id",
    ]

    init(base: String, fallbackCacheControl: String?, timeout: Double = 30) {
        var trimmed = base
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.base = trimmed
        self.fallbackCacheControl = fallbackCacheControl
        let configuration = URLSessionConfiguration.ephemeral
        configuration.urlCache = nil
        configuration.requestCachePolicy = .reloadIgnoringLocalAndRemoteCacheData
        configuration.httpShouldSetCookies = false
        configuration.httpCookieAcceptPolicy = .never
        configuration.timeoutIntervalForRequest = timeout
        configuration.timeoutIntervalForResource = timeout * 4
        session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }

    /// Where a request goes: the origin URL + the request's path and stripped query.
    func originURL(forwardURI: String) -> String { base + forwardURI }

    func respond(forwardURI: String, request: HTTPRequest, isHead: Bool) async -> (HTTPResponse, String?) {
        let target = originURL(forwardURI: forwardURI)
        guard let url = URL(string: target) else {
            return (EdgeResponses.badRequest("the request path cannot be forwarded to the origin (not a valid URL: \(target))"), "invalid origin URL \(target)")
        }
        var outgoing = URLRequest(url: url)
        outgoing.httpMethod = isHead ? "HEAD" : "GET"
        for name in Self.forwardedRequestHeaders {
            if let value = request.header(name) { outgoing.setValue(value, forHTTPHeaderField: name) }
        }
        // Like CloudFront: the viewer's address is appended to any X-Forwarded-For the viewer sent.
        if let peer = request.remoteAddress {
            let xff = request.headers("X-Forwarded-For").joined(separator: ", ")
            outgoing.setValue(xff.isEmpty ? peer : xff + ", " + peer, forHTTPHeaderField: "X-Forwarded-For")
        }
        outgoing.setValue("1.1 cfsign-edge", forHTTPHeaderField: "Via")
        outgoing.setValue("cfsign-edge", forHTTPHeaderField: "User-Agent")

        let result: Result<(Data, HTTPURLResponse), any Error> = await withCheckedContinuation { continuation in
            let task = session.dataTask(with: outgoing) { data, response, error in
                if let error {
                    continuation.resume(returning: .failure(error))
                } else if let http = response as? HTTPURLResponse {
                    continuation.resume(returning: .success((data ?? Data(), http)))
                } else {
                    continuation.resume(returning: .failure(URLError(.badServerResponse)))
                }
            }
            task.resume()
        }
        switch result {
        case .failure(let error):
            let why = (error as? URLError).map { "\($0.localizedDescription) (\($0.code.rawValue))" } ?? "\(error)"
            let response = EdgeResponses.xmlError(502, code: "BadGateway", message: "The origin \(base) could not be reached: \(why)")
            return (response, "origin \(target) failed: \(why)")
        case .success(let (data, origin)):
            var headers: [(name: String, value: String)] = []
            for name in Self.returnedResponseHeaders {
                if let value = origin.value(forHTTPHeaderField: name) { headers.append((name, value)) }
            }
            if origin.value(forHTTPHeaderField: "Cache-Control") == nil, let fallbackCacheControl {
                headers.append(("Cache-Control", fallbackCacheControl))
            }
            if isHead || origin.statusCode == 304 {
                // No body came: pass the origin's length through (for GET it is the body's own).
                if let length = origin.value(forHTTPHeaderField: "Content-Length") { headers.append(("Content-Length", length)) }
            }
            return (HTTPResponse(status: origin.statusCode, headers: headers, body: isHead ? [] : [UInt8](data)), nil)
        }
    }
}

/// Redirects from the origin go back to the viewer, as CloudFront passes them on.
private final class NoRedirects: NSObject, URLSessionTaskDelegate, Sendable {
    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void) {
        completionHandler(nil)
    }
}
