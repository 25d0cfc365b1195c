/// Where the next connection goes: the configured URL, or the Redis Cluster node that a `MOVED`
/// reply named.
///
/// A cfsign namespace keeps every key in one hash slot (`{NS}`), so one node serves all of it:
/// after a `MOVED` every later connection goes straight to that node (same login, database 0)
/// until another `MOVED` names another, or a connection to it fails (the node died, or a cluster
/// failover made another node the owner); then the URL's node is asked again and redirects anew.
///
/// ```swift
/// var route = RedisRoute(url: url)
/// let connection = try route.connect()
/// // ... a call throws: route.note(error), drop the connection, connect again
/// ```
public struct RedisRoute: Sendable {
    /// The configured URL: the seed node of a cluster, a plain server, or Sentinels.
    public let url: RedisURL
    /// The URL of the node a `MOVED` reply named, while it holds.
    public private(set) var redirect: RedisURL?

    public init(url: RedisURL) { self.url = url }

    /// Where `connect` goes now.
    public var target: RedisURL { redirect ?? url }

    /// Opens a connection to `target`; a failure to reach a redirected node forgets the redirect.
    public mutating func connect(connectTimeout: Double = 5, commandTimeout: Double = 10) throws(RedisError) -> RedisConnection {
        do {
            return try RedisConnection(url: target, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
        } catch {
            note(error)
            throw error
        }
    }

    /// Tells the route why a connection was dropped. Returns true for a `MOVED` (connect again at
    /// once: the new target is known); a connection error forgets the redirect.
    @discardableResult
    public mutating func note(_ error: RedisError) -> Bool {
        switch error.kind {
        case .moved:
            guard let node = error.movedTo else { return false }
            redirect = url.redirected(to: node)
            return true
        case .connection:
            redirect = nil
            return false
        case .server, .invalidURL:
            return false
        }
    }

    /// Opens a connection, sends `probe` (a harmless read of a key of the namespace, e.g.
    /// `LLEN {NS}:jobs`) and follows up to `hops` `MOVED` replies, so the connection returned is on
    /// the node that owns the key's slot. For one-shot tools that have no reconnect loop of their
    /// own. Any other reply (even an error such as NOPERM) leaves the connection where it is.
    public mutating func connect(probe: [String], hops: Int = 3, connectTimeout: Double = 5, commandTimeout: Double = 10) throws(RedisError) -> RedisConnection {
        var hop = 0
        while true {
            let connection = try connect(connectTimeout: connectTimeout, commandTimeout: commandTimeout)
            do {
                _ = try connection.command(probe)
                return connection
            } catch {
                hop += 1
                guard error.kind == .moved, hop <= hops, note(error) else { throw error }
            }
        }
    }
}
