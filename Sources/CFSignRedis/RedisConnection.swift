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
        /// A Redis Cluster node answered `-MOVED slot host:port`: the slot lives on `movedTo` now.
        /// The connection is dropped (`isBroken`); connect to `movedTo` (`RedisRoute` does).
        case moved
    }

    public let kind: Kind
    public let message: String
    /// For `.moved`: the node that owns the slot.
    public let movedTo: RedisNode?

    public init(_ kind: Kind, _ message: String, movedTo: RedisNode? = nil) {
        self.kind = kind
        self.message = message
        self.movedTo = movedTo
    }

    public var description: String { message }

    /// True for errors that a new connection may cure (to the same URL, or to where `MOVED` points).
    public var isConnectionError: Bool { kind == .connection || kind == .moved }
}

/// One blocking connection to Redis over hiredis, owned by one thread.
///
/// Deliberately not `Sendable`: sharing a connection across threads is a compile error. After a
/// connection error (`isBroken`), every call throws; make a new connection.
public final class RedisConnection {
    private let context: UnsafeMutablePointer<redisContext>
    /// The URL this connection was opened with.
    public let url: RedisURL
    /// The URL and, for Sentinel, the master's address: for logs and errors (no password).
    public let label: String
    private let connectTimeout: Double
    private let commandTimeout: Double
    public private(set) var isBroken = false
    /// Script SHA1s this connection has loaded, by source.
    private var scriptSHAs: [String: String] = [:]
    /// A connection to the node the last `-ASK` reply named (a slot being migrated), reused while
    /// the migration lasts.
    private var askConnection: RedisConnection?

    /// Connects, then AUTH (with an ACL user if the URL has one) and SELECT.
    ///
    /// A `redis+sentinel://` URL is resolved first: each Sentinel in turn is asked
    /// `SENTINEL get-master-addr-by-name`, the first address named is connected to, and after the
    /// login `ROLE` must say `master` (a replica, e.g. mid-failover, is a connection error: the
    /// caller retries after its backoff, and every new connection asks the Sentinels again).
    ///
    /// - Parameters:
    ///   - connectTimeout: seconds to wait for the TCP/Unix connect.
    ///   - commandTimeout: seconds any reply may take; a blocking command's own timeout must be
    ///     well below it, or hiredis fails the read and the connection is lost (interop-facts).
    public convenience init(url: RedisURL, connectTimeout: Double = 5, commandTimeout: Double = 10) throws(RedisError) {
        switch url.endpoint {
        case .tcp, .unix:
            try self.init(url: url, endpoint: url.endpoint, label: url.description, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
        case .sentinel(let nodes, let master):
            let address = try RedisConnection.masterAddress(nodes: nodes, master: master, url: url, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
            try self.init(url: url, endpoint: .tcp(host: address.host, port: address.port), label: "\(url) (master \(address))",
                          connectTimeout: connectTimeout, commandTimeout: commandTimeout)
            try requireMaster(address)
        }
    }

    private init(url: RedisURL, endpoint: RedisURL.Endpoint, label: String, connectTimeout: Double, commandTimeout: Double) throws(RedisError) {
        RedisConnection.ignoreSIGPIPE
        let tv = RedisConnection.timeval(connectTimeout)
        let made: UnsafeMutablePointer<redisContext>?
        switch endpoint {
        case .tcp(let host, let port): made = redisConnectWithTimeout(host, Int32(port), tv)
        case .unix(let path): made = redisConnectUnixWithTimeout(path, tv)
        case .sentinel: made = nil  // resolved by the caller
        }
        guard let context = made else { throw RedisError(.connection, "cannot connect to \(label): out of memory") }
        if context.pointee.err != 0 {
            let reason = RedisConnection.errorString(context)
            redisFree(context)
            throw RedisError(.connection, "cannot connect to \(label): \(reason)")
        }
        self.context = context
        self.url = url
        self.label = label
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        if commandTimeout > 0 { _ = redisSetTimeout(context, RedisConnection.timeval(commandTimeout)) }
        if let password = url.password {
            var args = ["AUTH"]
            if let user = url.username { args.append(user) }
            args.append(password)
            let reply = try command(args)
            if let e = reply.errorMessage {
                isBroken = true
                throw RedisError(.connection, "Redis at \(label) refused the login: \(e)")
            }
        }
        if url.database != 0 {
            let reply = try command(["SELECT", String(url.database)])
            if let e = reply.errorMessage {
                isBroken = true
                throw RedisError(.connection, "Redis at \(label) refused SELECT \(url.database): \(e)")
            }
        }
    }

    /// The master that the Sentinels of a `redis+sentinel://` URL name now (nil for other URLs),
    /// without connecting to it: for noticing a failover while connections to the old master
    /// still work (a manual failover, or one the old master was cut off from).
    public static func sentinelMaster(of url: RedisURL, connectTimeout: Double = 2, commandTimeout: Double = 2) throws(RedisError) -> RedisNode? {
        guard case .sentinel(let nodes, let master) = url.endpoint else { return nil }
        return try masterAddress(nodes: nodes, master: master, url: url, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }

    /// Asks each Sentinel in turn for the master's address; the first answer wins.
    private static func masterAddress(nodes: [RedisNode], master: String, url: RedisURL, connectTimeout: Double, commandTimeout: Double) throws(RedisError) -> RedisNode {
        var reasons: [String] = []
        for node in nodes {
            do throws(RedisError) {
                let sentinel = try RedisConnection(url: RedisURL(endpoint: .tcp(host: node.host, port: node.port)), connectTimeout: connectTimeout, commandTimeout: commandTimeout)
                let ask = ["SENTINEL", "get-master-addr-by-name", master]
                var reply = try sentinel.command(ask)
                if let e = reply.errorMessage, e.hasPrefix("NOAUTH"), let password = url.password {
                    // A Sentinel with requirepass: try the URL's login (often the same secret).
                    let login = try sentinel.command(["AUTH"] + (url.username.map { [$0] } ?? []) + [password])
                    if let refused = login.errorMessage { reasons.append("\(node): refused the login: \(refused)"); continue }
                    reply = try sentinel.command(ask)
                }
                if let e = reply.errorMessage { reasons.append("\(node): \(e)"); continue }
                guard let pair = reply.array, pair.count == 2, let host = pair[0].string, let portText = pair[1].string,
                      let port = Int(portText), (1...65535).contains(port) else {
                    reasons.append(reply.isNull ? "\(node): knows no master named \(master)" : "\(node): unexpected reply")
                    continue
                }
                return RedisNode(host: host, port: port)
            } catch {
                reasons.append(error.message)
            }
        }
        throw RedisError(.connection, "no Sentinel of \(url) named a master for \"\(master)\": " + reasons.joined(separator: "; "))
    }

    /// After a failover a Sentinel may still name the old master for a moment, or one just demoted.
    private func requireMaster(_ address: RedisNode) throws(RedisError) {
        let reply = try command(["ROLE"])
        if let e = reply.errorMessage {
            // An ACL without ROLE (NOPERM): trust the Sentinels; a demoted master answers READONLY later.
            if e.hasPrefix("NOPERM") { return }
            isBroken = true
            throw RedisError(.connection, "Redis at \(label) refused ROLE: \(e)")
        }
        guard let role = reply.array?.first?.string, role == "master" else {
            isBroken = true
            throw RedisError(.connection, "Redis at \(address), named master of \(url) by its Sentinels, says its role is \(reply.array?.first?.string ?? "unknown") (failover under way?)")
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
        return RedisError(.connection, "Redis at \(label): \(doing) failed: \(reason)")
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
    ///
    /// Redis Cluster and failover replies are acted on here, for every command, pipeline and
    /// script call alike:
    /// - `-MOVED slot host:port` in any reply throws a `.moved` error naming the node and marks the
    ///   connection broken (reconnect there; `RedisRoute` does). Every reply is read first.
    /// - `-ASK slot host:port` (the slot is being migrated): that command alone is sent again to
    ///   that node, once, after `ASKING` (an `EVALSHA` after a `SCRIPT LOAD` there, since the node
    ///   may lack the script), and its reply takes the place of the `ASK`. Not inside MULTI/EXEC.
    /// - `-READONLY` or `-UNBLOCKED` (this node was a master and is a replica now: a failover)
    ///   throws a `.connection` error, so the caller connects again and finds the new master.
    public func pipeline(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        guard !isBroken else { throw RedisError(.connection, "Redis at \(label): connection already lost") }
        for args in commands { try append(args) }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands { replies.append(try readReply()) }
        try redirects(commands, &replies)
        return replies
    }

    private func redirects(_ commands: [[[UInt8]]], _ replies: inout [RedisReply]) throws(RedisError) {
        var asked: [Int] = []
        for (i, reply) in replies.enumerated() {
            guard case .error(let e) = reply else { continue }
            if e.hasPrefix("MOVED ") {
                isBroken = true
                guard let node = RedisConnection.redirectTarget(e) else { throw RedisError(.server, "Redis at \(label) sent an unreadable redirect: \(e)") }
                throw RedisError(.moved, "Redis at \(label) says the slot moved: \(e)", movedTo: node)
            }
            if e.hasPrefix("READONLY ") || e.hasPrefix("UNBLOCKED ") {
                isBroken = true
                throw RedisError(.connection, "Redis at \(label) is no longer a master (failover?): \(e)")
            }
            if e.hasPrefix("ASK ") { asked.append(i) }
        }
        if asked.isEmpty { return }
        if commands.contains(where: { RedisConnection.isMulti($0.first) }) {
            // ASKING holds for one command, so a transaction cannot follow it; its caller retries.
            return
        }
        for i in asked {
            guard case .error(let e) = replies[i], let node = RedisConnection.redirectTarget(e) else { continue }
            let target: RedisConnection
            if let c = askConnection, !c.isBroken, c.url.endpoint == .tcp(host: node.host, port: node.port) {
                target = c
            } else {
                askConnection = nil
                target = try RedisConnection(url: url.redirected(to: node), connectTimeout: connectTimeout, commandTimeout: commandTimeout)
                askConnection = target
            }
            // The target may lack the script: load it there first (SCRIPT LOAD names no key, so
            // needs no ASKING), so the worker's ACL user needs no EVAL (ops/redis/users.acl).
            let load = scriptLoad(for: commands[i])
            let again = try target.pipeline((load.map { [$0] } ?? []) + [[Array("ASKING".utf8)], commands[i]])
            replies[i] = again[again.count - 1]
        }
    }

    /// `slot host:port` of a `MOVED`/`ASK` error.
    static func redirectTarget(_ error: String) -> RedisNode? {
        let parts = error.split(separator: " ")
        guard parts.count == 3, let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = parts[2][..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { return nil }
        return RedisNode(host: String(host), port: port)
    }

    private static func isMulti(_ name: [UInt8]?) -> Bool {
        guard let name, name.count == 5 else { return false }
        return String(decoding: name, as: UTF8.self).uppercased() == "MULTI"
    }

    /// `SCRIPT LOAD` of the script an `EVALSHA` runs, if this connection loaded it; else nil.
    private func scriptLoad(for command: [[UInt8]]) -> [[UInt8]]? {
        guard command.count >= 2, String(decoding: command[0], as: UTF8.self).uppercased() == "EVALSHA" else { return nil }
        let sha = String(decoding: command[1], as: UTF8.self)
        guard let source = scriptSHAs.first(where: { $0.value == sha })?.key else { return nil }
        return [Array("SCRIPT".utf8), Array("LOAD".utf8), Array(source.utf8)]
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
