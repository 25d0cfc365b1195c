import Foundation

/// A host and TCP port: a Sentinel, or the cluster node a `MOVED` reply names.
public struct RedisNode: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, with an IPv6 host in brackets.
    public var description: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }
}

/// Where a Redis server is and how to log in: `redis://[user:password@]host:port[/db]`,
/// `unix:///path/redis.sock[?db=N]`, or
/// `redis+sentinel://[user:password@]host:port[,host:port...]/mastername[/db]` (user, password and
/// master name percent-decoded). With Sentinel the user and password are the master's (the login
/// after the master is found); Sentinels are asked without one, and with the same one if they
/// answer NOAUTH.
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
        /// The master that these Sentinels name for `master` (asked in turn at every connect).
        case sentinel(nodes: [RedisNode], master: String)
    }

    public var endpoint: Endpoint
    public var username: String?
    public var password: String?
    public var database: Int

    public init(endpoint: Endpoint, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
    }

    public static let `default` = RedisURL(endpoint: .tcp(host: "127.0.0.1", port: 6379))

    /// The default port of a Sentinel.
    public static let sentinelPort = 26379

    /// The same login on another node, database 0 (a cluster has no other): where a `MOVED` reply sends us.
    public func redirected(to node: RedisNode) -> RedisURL {
        RedisURL(endpoint: .tcp(host: node.host, port: node.port), username: username, password: password, database: 0)
    }

    /// True for a `redis+sentinel://` URL.
    public var usesSentinel: Bool {
        if case .sentinel = endpoint { return true }
        return false
    }

    /// The URL without its password, safe to log.
    public var description: String {
        var auth = ""
        if let username { auth = Self.percentEncode(username) + (password == nil ? "" : ":***") + "@" }
        else if password != nil { auth = ":***@" }
        switch endpoint {
        case .tcp(let host, let port):
            let h = host.contains(":") ? "[\(host)]" : host
            return "redis://\(auth)\(h):\(port)" + (database == 0 ? "" : "/\(database)")
        case .unix(let path):
            return "unix://\(auth)\(path)" + (database == 0 ? "" : "?db=\(database)")
        case .sentinel(let nodes, let master):
            return "redis+sentinel://\(auth)" + nodes.map(\.description).joined(separator: ",") + "/" + Self.percentEncode(master)
                + (database == 0 ? "" : "/\(database)")
        }
    }

    public init(parsing text: String) throws(RedisError) {
        func bad(_ why: String) -> RedisError {
            RedisError(.invalidURL, "Redis URL \"\(RedisURL.redactForError(text))\" \(why); use redis://[user:password@]host:port[/db], unix:///path/redis.sock[?db=N] or redis+sentinel://[user:password@]host:port[,host:port...]/mastername[/db]")
        }
        if text.hasPrefix("redis+sentinel://") {
            try self.init(sentinel: Substring(text.dropFirst("redis+sentinel://".count)), bad)
            return
        }
        if text.hasPrefix("unix://") {
            var rest = Substring(text.dropFirst("unix://".count))
            var username: String? = nil, password: String? = nil
            if let at = rest.firstIndex(of: "@"), !rest[..<at].contains("/") {
                (username, password) = try Self.userInfo(rest[..<at], bad)
                rest = rest[rest.index(after: at)...]
            }
            var db = 0
            if let q = rest.firstIndex(of: "?") {
                let query = rest[rest.index(after: q)...]
                rest = rest[..<q]
                for item in query.split(separator: "&") {
                    let kv = item.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, kv[0] == "db", let n = Int(kv[1]), n >= 0 else {
                        throw bad("has an unknown query \"\(item)\" (only db=N is understood)")
                    }
                    db = n
                }
            }
            guard rest.hasPrefix("/"), rest.count > 1 else { throw bad("needs an absolute socket path") }
            self.init(endpoint: .unix(path: String(rest)), username: username, password: password, database: db)
            return
        }
        guard text.hasPrefix("redis://") else {
            if text.hasPrefix("rediss://") {
                throw bad("asks for TLS, which this build's hiredis (0.14) lacks; run stunnel beside the worker and point redis:// at it (ops/stunnel/README.md)")
            }
            throw bad("has an unsupported scheme")
        }
        var rest = Substring(text.dropFirst("redis://".count))
        var username: String? = nil, password: String? = nil
        if let at = rest.lastIndex(of: "@") {
            (username, password) = try Self.userInfo(rest[..<at], bad)
            rest = rest[rest.index(after: at)...]
        }
        var db = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty { db = try Self.database(path, bad) }
        }
        let node = try Self.node(rest, defaultPort: 6379, bad)
        self.init(endpoint: .tcp(host: node.host, port: node.port), username: username, password: password, database: db)
    }

    /// `[user:password@]host:port[,host:port...]/mastername[/db]`, after the scheme.
    private init(sentinel text: Substring, _ bad: (String) -> RedisError) throws(RedisError) {
        var rest = text
        var username: String? = nil, password: String? = nil
        if let at = rest.lastIndex(of: "@") {
            (username, password) = try Self.userInfo(rest[..<at], bad)
            rest = rest[rest.index(after: at)...]
        }
        guard let slash = rest.firstIndex(of: "/") else { throw bad("has no master name (redis+sentinel://host:port/mastername)") }
        let path = rest[rest.index(after: slash)...].split(separator: "/", omittingEmptySubsequences: false)
        rest = rest[..<slash]
        guard let name = path.first, !name.isEmpty else { throw bad("has no master name (redis+sentinel://host:port/mastername)") }
        guard let master = Self.percentDecode(name) else { throw bad("has a badly percent-encoded master name") }
        var db = 0
        switch path.count {
        case 1: break
        case 2: if !path[1].isEmpty { db = try Self.database(path[1], bad) }
        default: throw bad("has more than a master name and a database after the Sentinels")
        }
        var nodes: [RedisNode] = []
        for item in rest.split(separator: ",", omittingEmptySubsequences: false) {
            nodes.append(try Self.node(item, defaultPort: Self.sentinelPort, bad))
        }
        self.init(endpoint: .sentinel(nodes: nodes, master: master), username: username, password: password, database: db)
    }

    private static func database(_ text: Substring, _ bad: (String) -> RedisError) throws(RedisError) -> Int {
        guard let n = Int(text), n >= 0, n < 1_000_000 else { throw bad("has a database \"\(text)\" that is not a number") }
        return n
    }

    /// `host[:port]` or `[v6]:port`.
    private static func node(_ rest: Substring, defaultPort: Int, _ bad: (String) -> RedisError) throws(RedisError) -> RedisNode {
        var host: Substring
        var port = defaultPort
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw bad("has an IPv6 host without ']'") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw bad("has an invalid port") }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            if host.contains(":") { throw bad("has an IPv6 host without brackets; write redis://[::1]:6379") }
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else { throw bad("has an invalid port") }
            port = p
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw bad("has no host") }
        return RedisNode(host: String(host), port: port)
    }

    private static func userInfo(_ info: Substring, _ bad: (String) -> RedisError) throws(RedisError) -> (String?, String?) {
        let parts = info.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let user = percentDecode(parts[0]) else { throw bad("has a badly percent-encoded user") }
        var password: String? = nil
        if parts.count == 2 {
            guard let p = percentDecode(parts[1]) else { throw bad("has a badly percent-encoded password") }
            password = p
        }
        return (user.isEmpty ? nil : user, password)
    }

    static func percentDecode(_ s: Substring) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                // Two hex digits exactly: `UInt8(_:radix:)` alone would also take "+f".
                guard it.count >= 2,
                      let high = Character(Unicode.Scalar(it[it.startIndex])).hexDigitValue,
                      let low = Character(Unicode.Scalar(it[it.startIndex + 1])).hexDigitValue
                else { return nil }
                out.append(UInt8(high << 4 | low))
                it = it.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out += "%" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// The text with anything between `:` and `@` of the user info replaced, for error messages.
    static func redactForError(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text.range(of: "@", options: .backwards),
              scheme.upperBound < at.lowerBound else { return text }
        let info = text[scheme.upperBound..<at.lowerBound]
        guard let colon = info.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at.lowerBound...])
    }
}
