#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's limit on open files (RLIMIT_NOFILE), and how many HTTP connections fit under it
/// while leaving the rest of the process the descriptors it needs.
public enum OpenFileLimit {
    /// Descriptors kept free of HTTP clients: the worker's Redis connections (take, reply,
    /// heartbeat, key group, its subscription, a Cluster ASK or Sentinel connection while one is
    /// open), key files while a key group loads, OpenSSL, stdio, NIO's event loop and the
    /// listening socket. About 20 are in use at once; 128 leaves room for reconnects (each opens
    /// its new socket only after the old one is closed) and for the edge's origin and file reads.
    public static let reserved = 128

    /// Raises the soft limit to the hard limit, as Go's runtime does at start: the soft limit is
    /// often left at 1024 (systemd's default) for the sake of `select()`, which nothing here uses.
    /// Returns the soft limit in force afterwards, or nil if it cannot be read.
    public static func raiseToHardLimit() -> UInt64? {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 {
                limit = raised
            } else if limit.rlim_max == rlim_t.max {  // RLIM_INFINITY
                // An unlimited hard limit cannot be the soft one (the kernel caps it at nr_open);
                // 1,048,576 is Linux's default nr_open and more than any use here.
                raised.rlim_cur = 1 << 20
                if setrlimit(resource, &raised) == 0 { limit = raised }
            }
        }
        return UInt64(limit.rlim_cur)
    }

    /// The connection cap to use: `wanted`, lowered so that `reserved` descriptors stay free under
    /// `limit`; at least 1.
    public static func connectionCap(wanted: Int, limit: UInt64, reserved: Int = OpenFileLimit.reserved) -> Int {
        let room = limit > UInt64(Int.max) ? Int.max : Int(limit) - reserved
        return max(1, min(wanted, room))
    }

    #if canImport(Glibc)
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resource = RLIMIT_NOFILE
    #endif
}
