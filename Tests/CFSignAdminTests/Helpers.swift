import CFSignCore
import CFSignRedis
import CFSignTestSupport
import Foundation

/// One test's Redis: a real redis-server, a fresh namespace, and helpers that write what workers
/// and other operators would (registrations, heartbeats, key groups) without running a worker.
final class TestFleet {
    let server: RedisServer
    let namespace: Namespace
    let redis: RedisConnection

    init() throws {
        server = try RedisServer.start()
        namespace = try Namespace("t-\(UUID().uuidString.prefix(8).lowercased())")
        do { redis = try server.connect() } catch {
            server.stop()
            throw error
        }
    }

    deinit { server.stop() }

    /// A second connection, as another operator's or worker's.
    func connect() throws -> RedisConnection { try server.connect() }

    /// Registers worker `id` with `heartbeat` (raw bytes, so tests can store anything); nil
    /// registers it with no heartbeat key, as a dead worker that is not reaped yet looks.
    func register(_ id: String, heartbeat: String?) throws {
        _ = try redis.command(["SADD", namespace.workers, id])
        if let heartbeat { _ = try redis.command(["SET", namespace.heartbeat(worker: id), heartbeat]) }
    }

    /// Registers a live worker signing with `version` (nil: no group yet), maybe reporting a refusal.
    func live(_ id: String, version: Int64?, refusal: Heartbeat.Refusal? = nil) throws {
        let beat = Heartbeat(id: id, host: "test", pid: 1, startedAt: 0, seenAt: 0, jobs: 0, errors: 0, dead: 0,
                             keyGroupVersion: version, keyGroupRefusal: refusal, state: "running", reconnects: 0)
        try register(id, heartbeat: beat.json)
    }

    /// `{"version":V,"active":"KACTIVE0001","keys":[...]}` with file keys for `ids` (first active unless given).
    static func groupJSON(version: Int64?, ids: [String] = ["KACTIVE0001"], active: String? = nil) -> String {
        let keys = ids.map { #"{"id":"\#($0)","private_key_file":"/nonexistent/\#($0).pem"}"# }.joined(separator: ",")
        let v = version.map { #""version":\#($0),"# } ?? ""
        return #"{\#(v)"active":"\#(active ?? ids[0])","keys":[\#(keys)]}"#
    }

    func storeGroup(_ json: String) throws { _ = try redis.command(["SET", namespace.keyGroup, json]) }

    /// The bytes of `{NS}:keygroup`, nil when absent.
    func storedGroup() throws -> [UInt8]? { try redis.command(["GET", namespace.keyGroup]).bytes }

    func storedDocument() throws -> KeyGroupDocument? { try storedGroup().map { try KeyGroupDocument(json: $0) } }
}
