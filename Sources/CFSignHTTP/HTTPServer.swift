import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import CFSignSync
import Synchronization
import SystemPackage
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

/// What one HTTP client may hold. Without these limits, clients that connect and send nothing
/// take one file descriptor each until the process has none left, and then the signing path
/// cannot open a file or a Redis connection (issue 13, attack 5).
public struct HTTPServerLimits: Sendable, Equatable {
    /// Connections open at once. At the cap a new connection replaces the longest-open one that
    /// is not being answered, or is closed at once when every one is.
    public var maxConnections: Int
    /// Seconds a connection may wait, sending nothing, for its next request (or its first).
    public var idleTimeout: Double
    /// Seconds a client has to send a whole request once it has started one, so a client that
    /// dribbles its head (or a body) cannot hold a connection either.
    public var headerTimeout: Double
    /// Bytes of request line plus headers; a longer head is answered 431 and the connection closed.
    public var maxRequestHeadBytes: Int

    public init(maxConnections: Int = 256, idleTimeout: Double = 30, headerTimeout: Double = 10, maxRequestHeadBytes: Int = 16 * 1024) {
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        self.headerTimeout = headerTimeout
        self.maxRequestHeadBytes = maxRequestHeadBytes
    }
}

/// A small HTTP/1.1 server on SwiftNIO: parsing is NIO's, handlers are async closures.
///
/// Used for the worker's `/metrics`, `/healthz`, `/readyz` and by `cfsign edge`. Every connection
/// is held to `HTTPServerLimits`: a cap on open connections, an idle and a request timeout, and a
/// bound on the request head.
public final class HTTPServer: Service, Sendable {
    public typealias Handler = @Sendable (HTTPRequest) async -> HTTPResponse

    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let slots: ConnectionSlots
    /// The port actually bound (useful with port 0).
    public let port: Int
    public let limits: HTTPServerLimits

    /// Binds `host:port` and starts serving; throws if the address cannot be bound. The server
    /// then serves until `run()` (as a `Service` in the process's `ServiceGroup`) sees graceful
    /// shutdown or cancellation, or until `stop()`.
    public static func start(host: String, port: Int, threads: Int = 1, limits: HTTPServerLimits = HTTPServerLimits(), logger: Logger, handler: @escaping Handler) async throws -> HTTPServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let slots = ConnectionSlots(limit: max(1, limits.maxConnections), logger: logger)
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = limits.maxRequestHeadBytes
        decoderLimits.maxHeaderListSize = limits.maxRequestHeadBytes
        let idle = TimeAmount.nanoseconds(Int64(limits.idleTimeout * 1e9))
        let request = TimeAmount.nanoseconds(Int64(limits.headerTimeout * 1e9))
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                // Should accept() still fail for want of descriptors, wait a second instead of
                // retrying in a busy loop.
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler(shouldForwardIOErrorCaught: false))
                }
            }
            .childChannelInitializer { channel in
                // At the cap, the longest-open idle connection makes room; with none idle the new
                // one is closed at once (NIO's accept handler closes a child whose initializer
                // fails), so it holds its descriptor for no time at all.
                let activity = ConnectionActivity()
                guard let slot = slots.acquire(channel, activity: activity) else {
                    return channel.eventLoop.makeFailedFuture(ConnectionLimitReached())
                }
                channel.closeFuture.whenComplete { _ in slots.release(slot) }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    let deadlines = ConnectionDeadlines(idle: idle, request: request, activity: activity)
                    try pipeline.addHandler(deadlines)
                    try pipeline.configureHTTPServerPipeline(
                        withErrorHandling: false, withEncoderConfiguration: HTTPResponseEncoder.Configuration(),
                        withDecoderLimitConfiguration: decoderLimits)
                    try pipeline.addHandler(ProtocolErrorResponder())
                    try pipeline.addHandler(RequestHandler(handler: handler, logger: logger, deadlines: deadlines))
                }
            }
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        return HTTPServer(group: group, channel: channel, slots: slots, limits: limits, port: channel.localAddress?.port ?? port)
    }

    private init(group: MultiThreadedEventLoopGroup, channel: any Channel, slots: ConnectionSlots, limits: HTTPServerLimits, port: Int) {
        self.group = group
        self.channel = channel
        self.slots = slots
        self.limits = limits
        self.port = port
    }

    /// Connections open now (for tests and diagnostics).
    public var openConnections: Int { slots.open }

    /// Serves until graceful shutdown or cancellation, then stops. In a `ServiceGroup`, register
    /// it before the services whose state it reports: the group shuts services down in reverse
    /// order, so it still answers (a worker's `/readyz` says "draining") while they finish.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops listening and closes every connection; safe to call more than once.
    public func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
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

private struct ConnectionLimitReached: Error {}

/// Whether a connection is producing a response right now: only such a connection is never
/// closed to make room for a new one. Written on the connection's event loop, read by
/// `ConnectionSlots` from the loop of whichever connection arrives.
private final class ConnectionActivity: Sendable {
    private let flag = Atomic<Bool>(false)
    var answering: Bool {
        get { flag.load(ordering: .relaxed) }
        set { flag.store(newValue, ordering: .relaxed) }
    }
}

/// The open connections, at most `limit`, shared by every event loop of one server.
///
/// At the cap, a new connection takes the slot of the longest-open connection that is not being
/// answered (idle, or still sending its request), which is closed: so idle connections, however
/// many, can never lock out a health probe or a scrape. Only when every slot is producing a
/// response is the new connection refused. Evictions and refusals are logged at most once a
/// minute, with how many there were, so a flood cannot flood the log.
private final class ConnectionSlots: Sendable {
    private struct Entry {
        let channel: any Channel
        let activity: ConnectionActivity
    }

    private struct State {
        /// By arrival number: the smallest is the longest open.
        var open: [UInt64: Entry] = [:]
        var next: UInt64 = 0
        var evictedSinceLog = 0
        var refusedSinceLog = 0
        var lastLog: ContinuousClock.Instant? = nil
    }

    private let limit: Int
    private let logger: Logger
    private let state = Locked(State())

    init(limit: Int, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    var open: Int { state.withLock { $0.open.count } }

    /// A slot for `channel`, or nil when every slot is busy answering. The number it returns is
    /// what `release` takes when the channel closes.
    func acquire(_ channel: any Channel, activity: ConnectionActivity) -> UInt64? {
        let (number, victim, report) = state.withLock { s -> (UInt64?, (any Channel)?, (evicted: Int, refused: Int)?) in
            var victim: (any Channel)? = nil
            if s.open.count >= limit {
                guard let oldest = s.open.filter({ !$0.value.activity.answering }).keys.min() else {
                    s.refusedSinceLog += 1
                    return (nil, nil, Self.due(&s))
                }
                victim = s.open.removeValue(forKey: oldest)?.channel
                s.evictedSinceLog += 1
            }
            s.next += 1
            s.open[s.next] = Entry(channel: channel, activity: activity)
            return (s.next, victim, victim == nil ? nil : Self.due(&s))
        }
        victim?.close(promise: nil)
        if let report {
            logger.warning("HTTP connections at the cap: closed the longest-open idle ones to make room, refused new ones while all were answering", metadata: [
                "http_max_connections": "\(limit)", "closed_idle": "\(report.evicted)", "refused": "\(report.refused)",
            ])
        }
        return number
    }

    func release(_ number: UInt64) { _ = state.withLock { $0.open.removeValue(forKey: number) } }

    /// The counts to log, if a minute has passed since the last report (then reset).
    private static func due(_ s: inout State) -> (evicted: Int, refused: Int)? {
        let now = ContinuousClock.now
        guard s.lastLog.map({ now - $0 >= .seconds(60) }) ?? true else { return nil }
        s.lastLog = now
        defer { s.evictedSinceLog = 0; s.refusedSinceLog = 0 }
        return (s.evictedSinceLog, s.refusedSinceLog)
    }
}

/// Closes a connection that holds its slot without using it: one that sends nothing for
/// `idle` (before its first request or between requests), or takes longer than `request` to
/// send a whole request once it has started one (a head dribbled a byte at a time, or a body).
/// Sits first in the pipeline, so it sees raw bytes before the HTTP decoder; `RequestHandler`
/// tells it where requests begin and end. No deadline runs while a response is being produced.
private final class ConnectionDeadlines: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let idle: TimeAmount
    private let request: TimeAmount
    private let activity: ConnectionActivity
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    /// Requests whose head arrived and whose response is not yet written.
    private var unanswered = 0 {
        didSet { activity.answering = unanswered > 0 && !receiving }
    }
    /// A request has started (bytes or its head arrived) and its end has not.
    private var receiving = false {
        didSet { activity.answering = unanswered > 0 && !receiving }
    }

    init(idle: TimeAmount, request: TimeAmount, activity: ConnectionActivity) {
        self.idle = idle
        self.request = request
        self.activity = activity
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(idle)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !receiving && unanswered == 0 {
            receiving = true
            arm(request)
        }
        context.fireChannelRead(data)
    }

    /// A request head was decoded.
    func requestStarted() {
        unanswered += 1
        if !receiving {  // a pipelined request whose bytes came in while the last one was answered
            receiving = true
            arm(request)
        }
    }

    /// The request's end arrived: it is being answered, with no deadline.
    func requestReceived() {
        receiving = false
        cancel()
    }

    /// A response was written in full.
    func responseFinished() {
        unanswered = max(0, unanswered - 1)
        if unanswered == 0 && !receiving { arm(idle) }
    }

    private func arm(_ delay: TimeAmount) {
        cancel()
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) { bound.value.expire() }
    }

    private func cancel() {
        timer?.cancel()
        timer = nil
    }

    private func expire() {
        timer = nil
        context?.close(promise: nil)
    }
}

/// NIO's `HTTPServerProtocolErrorHandler`, except that a request head over the decoder's limits
/// gets 431 (Request Header Fields Too Large) rather than 400; then the connection is closed.
private final class ProtocolErrorResponder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responseUnterminated = false

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !responseUnterminated {
            let status: HTTPResponseStatus = parseError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            let body = parseError == .headerOverflow ? "request head too large\n" : "bad request\n"
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            let headers = HTTPHeaders([("Connection", "close"), ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", String(buffer.readableBytes))])
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head: responseUnterminated = true  // this server sends no informational (1xx) heads
        case .body: break
        case .end: responseUnterminated = false
        }
        context.write(data, promise: promise)
    }
}

private final class RequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let handler: HTTPServer.Handler
    private let logger: Logger
    private let deadlines: ConnectionDeadlines
    private var head: HTTPRequestHead?

    init(handler: @escaping HTTPServer.Handler, logger: Logger, deadlines: ConnectionDeadlines) {
        self.handler = handler
        self.logger = logger
        self.deadlines = deadlines
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            deadlines.requestStarted()
        case .body:
            break  // bodies are not used: GET and HEAD only
        case .end:
            deadlines.requestReceived()
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
            let deadlines = NIOLoopBound(self.deadlines, eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { response in
                RequestHandler.write(response, to: bound.value, version: version, keepAlive: keepAlive, isHead: isHead) {
                    deadlines.value.responseFinished()
                }
            }
        }
    }

    /// Writes `response`; `finished` runs once its end is written (or could not be).
    private static func write(_ response: HTTPResponse, to context: ChannelHandlerContext, version: HTTPVersion, keepAlive: Bool, isHead: Bool,
                              finished: @escaping @Sendable () -> Void) {
        var headers = HTTPHeaders(response.headers.map { ($0.name, $0.value) })
        if !headers.contains(name: "Content-Length") { headers.add(name: "Content-Length", value: String(response.body.count)) }
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        if !isHead, let file = response.file, file.length > 0 {
            streamFile(file, head: head, to: context, keepAlive: keepAlive, finished: finished)
            return
        }
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if !isHead && !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        let channel = context.channel
        done.whenComplete { _ in
            finished()
            if !keepAlive { channel.close(promise: nil) }
        }
    }

    /// Sends `file` in 256 KiB chunks, each read on NIO's thread pool and written before the next is
    /// read. A file that cannot be opened gives a 500; one that shrank meanwhile closes the connection
    /// (its Content-Length can no longer be met).
    private static func streamFile(_ file: HTTPResponse.FileBody, head: HTTPResponseHead, to context: ChannelHandlerContext, keepAlive: Bool,
                                   finished: @escaping @Sendable () -> Void) {
        guard let fd = SystemPackage.FileDescriptor.openForReading(file.path) else {
            let failed = HTTPResponse.text(500, "the file could not be opened\n")
            write(failed, to: context, version: head.version, keepAlive: false, isHead: false, finished: finished)
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
                let channel = bound.value.channel
                done.whenComplete { _ in
                    finished()
                    if !keepAlive { channel.close(promise: nil) }
                }
                return
            }
            let count = Int(min(chunkSize, remaining))
            NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { () -> [UInt8] in
                guard let bytes = fd.bytes(at: offset, count: count), bytes.count == count else { return [] }
                return bytes
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

private func closeFile(_ fd: SystemPackage.FileDescriptor) {
    try? fd.close()
}
