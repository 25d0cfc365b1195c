import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An HTTP request as the handlers see it: no NIO types leak out of this module.
public struct HTTPRequest: Sendable {
    public let method: String
    /// Path and query exactly as sent (`/a/b.pdf?x=1`).
    public let uri: String
    public let headers: [(name: String, value: String)]
    /// The peer's IP address (no port), if known.
    public let remoteAddress: String?

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Every value of a header (case-insensitive), in order.
    public func headers(_ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    public var path: String { String(uri.prefix { $0 != "?" }) }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// A part of a file sent as the body instead of `body`, read in chunks while it is written, so
    /// a large file is never held in memory (`cfsign edge`). The handler sets Content-Length.
    public var file: FileBody? = nil

    public struct FileBody: Sendable {
        public let path: String
        public let offset: Int64
        public let length: Int64

        public init(path: String, offset: Int64, length: Int64) {
            self.path = path
            self.offset = offset
            self.length = length
        }
    }

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", contentType)], body: Array(text.utf8))
    }
}

/// A small HTTP/1.1 server on SwiftNIO: parsing is NIO's, handlers are async closures.
///
/// Used for the worker's `/metrics`, `/healthz`, `/readyz` and by `cfsign edge`.
public final class HTTPServer: Sendable {
    public typealias Handler = @Sendable (HTTPRequest) async -> HTTPResponse

    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    /// The port actually bound (useful with port 0).
    public let port: Int

    /// Binds `host:port` and starts serving; throws if the address cannot be bound.
    public init(host: String, port: Int, threads: Int = 1, logger: Logger, handler: @escaping Handler) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(handler: handler, logger: logger))
                }
            }
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
        self.group = group
        self.port = channel.localAddress?.port ?? port
    }

    /// Stops listening and closes every connection.
    public func shutdown() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// Splits `HOST:PORT` (IPv6 hosts in brackets).
    public static func parseAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}

private final class RequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let handler: HTTPServer.Handler
    private let logger: Logger
    private var head: HTTPRequestHead?

    init(handler: @escaping HTTPServer.Handler, logger: Logger) {
        self.handler = handler
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body:
            break  // bodies are not used: GET and HEAD only
        case .end:
            guard let h = head else { return }
            head = nil
            let request = HTTPRequest(
                method: h.method.rawValue, uri: h.uri,
                headers: h.headers.map { ($0.name, $0.value) },
                remoteAddress: context.remoteAddress?.ipAddress)
            let keepAlive = h.isKeepAlive
            let isHead = h.method == .HEAD
            let version = h.version
            let handler = self.handler
            let promise = context.eventLoop.makePromise(of: HTTPResponse.self)
            promise.completeWithTask { await handler(request) }
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { response in
                RequestHandler.write(response, to: bound.value, version: version, keepAlive: keepAlive, isHead: isHead)
            }
        }
    }

    private static func write(_ response: HTTPResponse, to context: ChannelHandlerContext, version: HTTPVersion, keepAlive: Bool, isHead: Bool) {
        var headers = HTTPHeaders(response.headers.map { ($0.name, $0.value) })
        if !headers.contains(name: "Content-Length") { headers.add(name: "Content-Length", value: String(response.body.count)) }
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        if !isHead, let file = response.file, file.length > 0 {
            streamFile(file, head: head, to: context, keepAlive: keepAlive)
            return
        }
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if !isHead && !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// Sends `file` in 256 KiB chunks, each read on NIO's thread pool and written before the next is
    /// read. A file that cannot be opened gives a 500; one that shrank meanwhile closes the connection
    /// (its Content-Length can no longer be met).
    private static func streamFile(_ file: HTTPResponse.FileBody, head: HTTPResponseHead, to context: ChannelHandlerContext, keepAlive: Bool) {
        let fd = open(file.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let failed = HTTPResponse.text(500, "the file could not be opened\n")
            write(failed, to: context, version: head.version, keepAlive: false, isHead: false)
            return
        }
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let chunkSize: Int64 = 256 * 1024
        @Sendable func send(from offset: Int64, remaining: Int64) {
            guard remaining > 0 else {
                closeFile(fd)
                let done = bound.value.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
                if !keepAlive {
                    let channel = bound.value.channel
                    done.whenComplete { _ in channel.close(promise: nil) }
                }
                return
            }
            let count = Int(min(chunkSize, remaining))
            NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { () -> [UInt8] in
                var bytes = [UInt8](repeating: 0, count: count)
                var done = 0
                while done < count {
                    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    done += n
                }
                return done == count ? bytes : []
            }.whenComplete { result in
                let context = bound.value
                guard case .success(let bytes) = result, !bytes.isEmpty else {
                    closeFile(fd)
                    context.close(promise: nil)
                    return
                }
                var buffer = context.channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer)))).whenComplete { written in
                    switch written {
                    case .success: send(from: offset + Int64(count), remaining: remaining - Int64(count))
                    case .failure: closeFile(fd)  // the viewer went away; NIO closes the channel
                    }
                }
            }
        }
        send(from: file.offset, remaining: file.length)
    }
}

private func closeFile(_ fd: CInt) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #elseif canImport(Darwin)
    _ = Darwin.close(fd)
    #endif
}
