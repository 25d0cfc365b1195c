import CFSignCore
import CFSignRedis

/// The connection an operator tool uses for one namespace.
public enum FleetConnection {
    /// A connection to `url` for namespace `ns`. On Redis Cluster it ends on the node that owns the
    /// namespace's slot (a `MOVED` reply to a read of `{NS}:jobs` is followed; every key of a
    /// namespace shares that slot), so any node of the cluster will do as `url`.
    public static func open(_ url: RedisURL, namespace ns: Namespace, connectTimeout: Double = 5, commandTimeout: Double = 10) throws(RedisError) -> RedisConnection {
        var route = RedisRoute(url: url)
        return try route.connect(probe: ["LLEN", ns.jobs], connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }
}
