import AsyncHTTPClient
import CFSignSync
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix

/// The process's one HTTPS client for KMS and STS: one NIO event loop thread (the only thread that
/// waits on KMS sockets, however many calls are in flight), kept-alive connections reused across
/// calls, HTTP/2 where the endpoint offers it. Shut down once, at exit (`shutdown()`).
public final class KMSHTTP: Sendable {
    public static let shared: KMSHTTP = {
        started.withLock { $0 = true }
        return KMSHTTP()
    }()
    private static let started = Locked(false)

    /// `shared.shutdown()` if `shared` was ever made (without making it).
    public static func shutdownIfStarted() {
        if started.withLock({ $0 }) { shared.shutdown() }
    }

    let client: HTTPClient
    private let loops: MultiThreadedEventLoopGroup
    private let closed = Locked(false)

    init() {
        loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = HTTPClient.Configuration()
        // The worker bounds calls in flight (kms_max_in_flight); the pool only has to keep up.
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        // The per-call deadline (kms_call_timeout) ends once the response head arrives; the read
        // timeout bounds a body that stalls after it, at the longest kms_call_timeout allowed.
        configuration.timeout = .init(connect: .seconds(2), read: .seconds(60))
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .shared(loops), configuration: configuration)
    }

    /// Closes the connections and stops the event loop thread; calls after this fail.
    /// Never call it from a Swift concurrency task (it waits).
    public func shutdown() {
        let first = closed.withLock { c in
            defer { c = true }
            return !c
        }
        guard first else { return }
        let done = DispatchSemaphore(value: 0)
        client.shutdown { _ in done.signal() }
        done.wait()
        try? loops.syncShutdownGracefully()
    }

    /// One POST; a transport failure (no connection, timeout) is a retryable `.unavailable`.
    func post(_ url: String, headers: [(String, String)], body: [UInt8], timeout: Duration, service: String) async throws(KMSError) -> (status: Int, errorType: String?, body: [UInt8]) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            // NIO's own conversion (truncating to nanoseconds, clamped where the arithmetic would overflow).
            let response = try await client.execute(request, timeout: TimeAmount(timeout))
            let buffer = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), response.headers.first(name: "x-amzn-ErrorType"), Array(buffer.readableBytesView))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw KMSError(.unavailable, code: "Timeout", "\(service) at \(url) did not answer within \(Self.describe(timeout)) (kms_call_timeout)")
        } catch {
            throw KMSError(.unavailable, code: "ConnectionError", "cannot reach \(service) at \(url): \(KMSError.bounded("\(error)", limit: KMSError.messageLimit))")
        }
    }

    static func describe(_ d: Duration) -> String {
        let (s, a) = d.components
        let ms = s * 1000 + a / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }
}

/// Runs async work to completion from a plain thread (a key-group load, the CLI). Never call it from
/// a Swift concurrency task: it blocks the calling thread until the work is done.
public enum Blocking {
    public static func run<T: Sendable>(_ body: @escaping @Sendable () async throws(KMSError) -> T) throws(KMSError) -> T {
        let done = DispatchSemaphore(value: 0)
        let result = Locked<Result<T, KMSError>?>(nil)
        Task.detached {
            let r: Result<T, KMSError>
            do throws(KMSError) {
                r = .success(try await body())
            } catch {
                r = .failure(error)
            }
            result.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return try result.withLock { $0! }.get()
    }
}

/// An endpoint URL split into what a request needs: the URL to post to and the `Host` header value.
/// Plain `http://` only to a loopback host (a local KMS such as moto or LocalStack): anywhere else
/// the signed requests, and STS's answer holding credentials, would cross the network unencrypted.
struct Endpoint: Sendable {
    let url: String
    let host: String

    /// `variable`: the environment variable `text` came from, for the messages.
    init(_ text: String, service: String, variable: String? = nil) throws(KMSError) {
        let from = variable ?? "AWS_ENDPOINT_URL_\(service.uppercased()) / AWS_ENDPOINT_URL"
        let shown = KMSError.bounded(text, limit: KMSError.messageLimit)
        guard let u = URL(string: text), let scheme = u.scheme?.lowercased(), scheme == "https" || scheme == "http", let h = u.host, !h.isEmpty else {
            throw KMSError(.invalid, code: nil, "the \(service) endpoint \"\(shown)\" (\(from)) is not an http(s)://host[:port] URL")
        }
        let bare = h.hasPrefix("[") ? String(h.dropFirst().dropLast()) : h
        if scheme == "http", !Self.isLoopback(bare) {
            throw KMSError(.invalid, code: nil, "\(from) is \"\(shown)\": plain http:// is accepted only for a loopback host (127.0.0.1, ::1, localhost); use https://")
        }
        let hostPart = bare.contains(":") ? "[\(bare)]" : bare
        var host = hostPart
        if let port = u.port, !(scheme == "https" && port == 443), !(scheme == "http" && port == 80) { host += ":\(port)" }
        var path = u.path
        if path.isEmpty { path = "/" }
        self.host = host
        self.url = "\(scheme)://\(host)\(path)"
    }

    /// `localhost`, an IPv4 address in 127.0.0.0/8 written as four decimal numbers, or `::1`.
    static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased()
        if h == "localhost" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 4, parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy { $0.isASCII && $0.isNumber } && UInt8($0) != nil }) {
            return parts[0] == "127"
        }
        var v6 = in6_addr()
        guard h.contains(":"), inet_pton(AF_INET6, h, &v6) == 1 else { return false }
        var loopback = in6_addr()
        _ = inet_pton(AF_INET6, "::1", &loopback)
        let a = withUnsafeBytes(of: v6) { Array($0) }
        return a == withUnsafeBytes(of: loopback) { Array($0) }
    }
}
