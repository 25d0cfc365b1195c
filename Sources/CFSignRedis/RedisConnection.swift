internal import CCFSignHiredis
#if canImport(Glibc)
import Glibc
#endif

/// A Redis reply copied out of hiredis into a Swift value (RESP2).
public enum RedisReply: Sendable, Equatable {
    case bulk([UInt8])
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    /// An error reply from the server (`-ERR ...`); the connection is still good.
    case error(String)

    /// Bulk or status text.
    public var string: String? {
        switch self {
        case .bulk(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }

    public var bytes: [UInt8]? {
        if case .bulk(let b) = self { return b }
        return nil
    }

    public var integer: Int64? {
        switch self {
        case .integer(let n): return n
        case .bulk(let b): return Int64(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }

    public var errorMessage: String? {
        if case .error(let e) = self { return e }
        return nil
    }
}

/// Why a Redis call failed.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The URL cannot be used.
        case invalidURL
        /// Connecting, reading or writing failed; the connection is dead and must be replaced.
        case connection
        /// The server answered with an error (`-ERR`, `-NOPERM`, `-WRONGPASS`, ...).
        case server
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// True for errors that a new connection may cure.
    public var isConnectionError: Bool { kind == .connection }
}

/// One blocking connection to Redis over hiredis, owned by one thread.
///
/// Deliberately not `Sendable`: sharing a connection across threads is a compile error. After a
/// connection error (`isBroken`), every call throws; make a new connection.
public final class RedisConnection {
    private let context: UnsafeMutablePointer<redisContext>
    public let url: RedisURL
    public private(set) var isBroken = false
    /// Script SHA1s this connection has loaded, by source.
    private var scriptSHAs: [String: String] = [:]

    /// Connects, then AUTH (with an ACL user if the URL has one) and SELECT.
    ///
    /// - Parameters:
    ///   - connectTimeout: seconds to wait for the TCP/Unix connect.
    ///   - commandTimeout: seconds any reply may take; a blocking command's own timeout must be
    ///     well below it, or hiredis fails the read and the connection is lost (interop-facts).
    public init(url: RedisURL, connectTimeout: Double = 5, commandTimeout: Double = 10) throws(RedisError) {
        RedisConnection.ignoreSIGPIPE
        let tv = RedisConnection.timeval(connectTimeout)
        let made: UnsafeMutablePointer<redisContext>?
        switch url.endpoint {
        case .tcp(let host, let port): made = redisConnectWithTimeout(host, Int32(port), tv)
        case .unix(let path): made = redisConnectUnixWithTimeout(path, tv)
        }
        guard let context = made else { throw RedisError(.connection, "cannot connect to \(url): out of memory") }
        if context.pointee.err != 0 {
            let reason = RedisConnection.errorString(context)
            redisFree(context)
            throw RedisError(.connection, "cannot connect to \(url): \(reason)")
        }
        self.context = context
        self.url = url
        if commandTimeout > 0 { _ = redisSetTimeout(context, RedisConnection.timeval(commandTimeout)) }
        if let password = url.password {
            var args = ["AUTH"]
            if let user = url.username { args.append(user) }
            args.append(password)
            let reply = try command(args)
            if let e = reply.errorMessage {
                isBroken = true
                throw RedisError(.connection, "Redis at \(url) refused the login: \(e)")
            }
        }
        if url.database != 0 {
            let reply = try command(["SELECT", String(url.database)])
            if let e = reply.errorMessage {
                isBroken = true
                throw RedisError(.connection, "Redis at \(url) refused SELECT \(url.database): \(e)")
            }
        }
    }

    deinit { redisFree(context) }

    /// Writing to a connection the server closed raises SIGPIPE, which kills the process silently.
    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN); return () }()

    private static func timeval(_ seconds: Double) -> Glibc.timeval {
        let whole = Int(seconds)
        return Glibc.timeval(tv_sec: whole, tv_usec: Int((seconds - Double(whole)) * 1_000_000))
    }

    private static func errorString(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[..<end], as: UTF8.self)
        }
    }

    private func connectionError(_ doing: String) -> RedisError {
        isBroken = true
        let reason = context.pointee.err != 0 ? RedisConnection.errorString(context) : "connection lost"
        return RedisError(.connection, "Redis at \(url): \(doing) failed: \(reason)")
    }

    // MARK: Commands

    /// Sends one command and waits for its reply. Server errors come back as `.error`.
    public func command(_ args: [String]) throws(RedisError) -> RedisReply {
        try command(bytes: args.map { Array($0.utf8) })
    }

    public func command(bytes args: [[UInt8]]) throws(RedisError) -> RedisReply {
        try pipeline([args])[0]
    }

    /// Sends every command in one write, then reads every reply: one round trip.
    public func pipeline(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        guard !isBroken else { throw RedisError(.connection, "Redis at \(url): connection already lost") }
        for args in commands { try append(args) }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands { replies.append(try readReply()) }
        return replies
    }

    /// Pipelined string commands.
    public func pipeline(strings commands: [[String]]) throws(RedisError) -> [RedisReply] {
        try pipeline(commands.map { $0.map { Array($0.utf8) } })
    }

    /// MULTI, the commands, EXEC in one round trip; returns EXEC's replies (nil if aborted by WATCH).
    public func transaction(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply]? {
        let replies = try pipeline([[Array("MULTI".utf8)]] + commands + [[Array("EXEC".utf8)]])
        let exec = replies[replies.count - 1]
        if let e = exec.errorMessage {
            let queued = replies.dropFirst().dropLast().compactMap(\.errorMessage).first
            throw RedisError(.server, queued ?? e)
        }
        if exec.isNull { return nil }
        guard let results = exec.array else { throw RedisError(.server, "unexpected EXEC reply") }
        return results
    }

    private func append(_ args: [[UInt8]]) throws(RedisError) {
        // One buffer for every argument, kept alive for the whole call (hiredis copies into its buffer).
        var lengths = args.map(\.count)
        var flat = [CChar]()
        flat.reserveCapacity(lengths.reduce(0, +) + 1)
        for a in args { a.withUnsafeBufferPointer { flat.append(contentsOf: UnsafeRawBufferPointer($0).bindMemory(to: CChar.self)) } }
        flat.append(0)
        let status = flat.withUnsafeBufferPointer { base -> Int32 in
            var pointers: [UnsafePointer<CChar>?] = []
            pointers.reserveCapacity(args.count)
            var offset = 0
            for n in lengths {
                pointers.append(base.baseAddress! + offset)
                offset += n
            }
            return pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeMutableBufferPointer { argvlen in
                    redisAppendCommandArgv(context, Int32(args.count), argv.baseAddress, argvlen.baseAddress)
                }
            }
        }
        guard status == REDIS_OK else { throw connectionError("sending a command") }
    }

    private func readReply() throws(RedisError) -> RedisReply {
        var raw: UnsafeMutableRawPointer? = nil
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else { throw connectionError("reading a reply") }
        defer { freeReplyObject(raw) }
        return RedisConnection.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    static func convert(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            return .bulk(reply.str.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(reply.len))) } ?? [])
        case REDIS_REPLY_STATUS:
            return .status(reply.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(reply.len)), as: UTF8.self) } ?? "")
        case REDIS_REPLY_ERROR:
            return .error(reply.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(reply.len)), as: UTF8.self) } ?? "")
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            items.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                if let e = reply.element[i] { items.append(convert(e)) } else { items.append(.null) }
            }
            return .array(items)
        default:
            return .null
        }
    }

    // MARK: Scripts

    /// Runs a Lua script by SHA (EVALSHA), loading it first on this connection and again on NOSCRIPT
    /// (a restarted or failed-over Redis has no scripts).
    public func evaluate(_ script: RedisScript, keys: [[UInt8]], arguments: [[UInt8]]) throws(RedisError) -> RedisReply {
        try evaluate([RedisScriptCall(script: script, keys: keys, arguments: arguments)])[0]
    }

    /// Many script calls in one round trip; calls that hit NOSCRIPT did not run, so they are re-sent.
    public func evaluate(_ calls: [RedisScriptCall]) throws(RedisError) -> [RedisReply] {
        for call in calls where scriptSHAs[call.script.source] == nil { try load(call.script) }
        var replies = try pipeline(calls.map { evalsha($0) })
        let missing = replies.indices.filter { replies[$0].errorMessage?.hasPrefix("NOSCRIPT") == true }
        if !missing.isEmpty {
            scriptSHAs.removeAll()
            for i in missing where scriptSHAs[calls[i].script.source] == nil { try load(calls[i].script) }
            let again = try pipeline(missing.map { evalsha(calls[$0]) })
            for (i, r) in zip(missing, again) { replies[i] = r }
        }
        return replies
    }

    private func evalsha(_ call: RedisScriptCall) -> [[UInt8]] {
        [Array("EVALSHA".utf8), Array(scriptSHAs[call.script.source]!.utf8), Array(String(call.keys.count).utf8)] + call.keys + call.arguments
    }

    private func load(_ script: RedisScript) throws(RedisError) {
        let reply = try command(["SCRIPT", "LOAD", script.source])
        guard let sha = reply.string, reply.errorMessage == nil else {
            throw RedisError(.server, "Redis refused SCRIPT LOAD for \(script.name): \(reply.errorMessage ?? "unexpected reply")")
        }
        scriptSHAs[script.source] = sha
    }

    // MARK: Pub/sub

    /// Subscribes this connection to `channels`; from now on use only `nextMessage(timeout:)`.
    public func subscribe(_ channels: [String]) throws(RedisError) {
        try append([Array("SUBSCRIBE".utf8)] + channels.map { Array($0.utf8) })
        for _ in channels {
            let r = try readReply()
            guard let a = r.array, a.first?.string == "subscribe" else {
                throw RedisError(.server, "SUBSCRIBE failed: \(r.errorMessage ?? "unexpected reply")")
            }
        }
    }

    /// Waits up to `timeout` seconds for a pub/sub message on a subscribed connection; returns
    /// (channel, payload), or nil on timeout. Uses poll() on the socket so no read ever times out
    /// inside hiredis (which would kill the connection).
    public func nextMessage(timeout: Double) throws(RedisError) -> (channel: String, payload: [UInt8])? {
        while true {
            if let message = try bufferedMessage() { return message }
            var fds = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
            let n = poll(&fds, 1, Int32(max(0, timeout * 1000)))
            if n < 0 {
                if errno == EINTR { continue }
                throw connectionError("waiting for a message")
            }
            if n == 0 { return nil }
            guard redisBufferRead(context) == REDIS_OK else { throw connectionError("reading a message") }
            if let message = try bufferedMessage() { return message }
            // Data arrived but no whole message yet: wait again (bounded by the caller's loop).
        }
    }

    private func bufferedMessage() throws(RedisError) -> (channel: String, payload: [UInt8])? {
        while true {
            var raw: UnsafeMutableRawPointer? = nil
            guard redisGetReplyFromReader(context, &raw) == REDIS_OK else { throw connectionError("parsing a message") }
            guard let raw else { return nil }
            let reply = RedisConnection.convert(raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            if let a = reply.array, a.count == 3, a[0].string == "message", let channel = a[1].string, let payload = a[2].bytes {
                return (channel, payload)
            }
        }
    }
}

/// A Lua script, identified by its source; `RedisConnection` loads it and calls it by SHA.
public struct RedisScript: Sendable, Hashable {
    public let name: String
    public let source: String
    public init(name: String, source: String) {
        self.name = name
        self.source = source
    }
}

/// One call of a script inside a pipeline.
public struct RedisScriptCall {
    public let script: RedisScript
    public let keys: [[UInt8]]
    public let arguments: [[UInt8]]
    public init(script: RedisScript, keys: [[UInt8]], arguments: [[UInt8]]) {
        self.script = script
        self.keys = keys
        self.arguments = arguments
    }
}
