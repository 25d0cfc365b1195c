import CFSignRedis
import CFSignTestSupport
import Foundation
import Testing

/// Sentinel resolution, failover replies and Redis Cluster redirects, against real servers: a
/// Sentinel is `redis-server <conf> --sentinel`, a cluster two cluster-enabled servers.
@Suite("RedisConnection with Sentinel, READONLY and Cluster redirects")
struct RedisHATests {
    // MARK: Sentinel

    @Test func sentinelURLConnectsToTheMasterTheSentinelNames() throws {
        let master = try RedisServer.start()
        defer { master.stop() }
        let sentinel = try RedisServer.startSentinel(monitoring: master, name: "cfsign-main")
        defer { sentinel.stop() }
        let deadPort = try freeLoopbackPort()  // nothing listens: asked first, skipped
        let url = try RedisURL(parsing: "redis+sentinel://127.0.0.1:\(deadPort),127.0.0.1:\(sentinel.port!)/cfsign-main")
        let connection = try RedisConnection(url: url, connectTimeout: 1, commandTimeout: 5)
        #expect(try connection.command(["SET", "k", "v"]) == .status("OK"))
        #expect(try master.connect().command(["GET", "k"]) == .bulk(Array("v".utf8)))
        #expect(connection.label.contains("master 127.0.0.1:\(master.port!)"))
        #expect(try RedisConnection.sentinelMaster(of: url) == RedisNode(host: "127.0.0.1", port: master.port!))
        #expect(try RedisConnection.sentinelMaster(of: master.url) == nil)
    }

    @Test func sentinelURLAppliesTheLoginAndDatabaseToTheMaster() throws {
        let master = try RedisServer.start(extraArguments: ["--requirepass", "s3cret"])
        defer { master.stop() }
        let sentinel = try RedisServer.startSentinel(monitoring: master, name: "m")
        defer { sentinel.stop() }
        let url = try RedisURL(parsing: "redis+sentinel://:s3cret@127.0.0.1:\(sentinel.port!)/m/3")
        let connection = try RedisConnection(url: url, connectTimeout: 1, commandTimeout: 5)
        _ = try connection.command(["SET", "in-db-3", "1"])
        let direct = try master.connect(password: "s3cret", database: 3)
        #expect(try direct.command(["EXISTS", "in-db-3"]) == .integer(1))
        #expect(!connection.label.contains("s3cret"))
    }

    @Test func anUnknownMasterNameIsAConnectionErrorNamingEachSentinel() throws {
        let master = try RedisServer.start()
        defer { master.stop() }
        let sentinel = try RedisServer.startSentinel(monitoring: master, name: "m")
        defer { sentinel.stop() }
        let deadPort = try freeLoopbackPort()
        let url = try RedisURL(parsing: "redis+sentinel://127.0.0.1:\(sentinel.port!),127.0.0.1:\(deadPort)/other")
        let error = #expect(throws: RedisError.self) { try RedisConnection(url: url, connectTimeout: 1, commandTimeout: 2) }
        #expect(error?.kind == .connection)
        #expect(error?.message.contains("knows no master named other") == true)
        #expect(error?.message.contains(":\(deadPort)") == true)
    }

    @Test func aSentinelNamingAReplicaIsAConnectionError() throws {
        let primary = try RedisServer.start()
        defer { primary.stop() }
        let replica = try RedisServer.start(extraArguments: ["--replicaof", "127.0.0.1", String(primary.port!)])
        defer { replica.stop() }
        // A Sentinel told that the replica is the master (as one may be, for a moment, mid-failover).
        let sentinel = try RedisServer.startSentinel(monitoring: replica, name: "m")
        defer { sentinel.stop() }
        let url = try RedisURL(parsing: "redis+sentinel://127.0.0.1:\(sentinel.port!)/m")
        let error = #expect(throws: RedisError.self) { try RedisConnection(url: url, connectTimeout: 1, commandTimeout: 2) }
        #expect(error?.kind == .connection)
        #expect(error?.message.contains("role is slave") == true)
    }

    @Test func aReadonlyReplyMeansThisNodeIsAReplicaNow() throws {
        let primary = try RedisServer.start()
        defer { primary.stop() }
        let replica = try RedisServer.start(extraArguments: ["--replicaof", "127.0.0.1", String(primary.port!)])
        defer { replica.stop() }
        let connection = try replica.connect()
        #expect(try connection.command(["GET", "k"]) == .null, "reads still work")
        let error = #expect(throws: RedisError.self) { try connection.command(["SET", "k", "v"]) }
        #expect(error?.kind == .connection)
        #expect(error?.message.contains("no longer a master") == true)
        #expect(connection.isBroken)
    }

    // MARK: Cluster

    /// Two cluster nodes: `owner` serves every slot, `other` none.
    private func twoNodeCluster() throws -> (owner: RedisServer, other: RedisServer) {
        func node() throws -> RedisServer {
            try RedisServer.start(extraArguments: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                                   "--cluster-port", String(try freeLoopbackPort())])
        }
        let owner = try node()
        let other = try node()
        let o = try owner.connect()
        #expect(try o.command(["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]) == .status("OK"))
        let busPort = String(decoding: try o.command(["CONFIG", "GET", "cluster-port"]).array![1].bytes!, as: UTF8.self)
        _ = try other.connect().command(["CLUSTER", "MEET", "127.0.0.1", String(owner.port!), busPort])
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            do throws(RedisError) {
                _ = try other.connect().command(["GET", "probe"])  // CLUSTERDOWN until it knows the slots
            } catch {
                if error.kind == .moved { return (owner, other) }
            }
            usleep(50_000)
        }
        throw TestSupportError("the second node never learned the slots")
    }

    @Test func movedInAnyReplyThrowsWithTheOwnerAndRedisRouteFollowsIt() throws {
        let (owner, other) = try twoNodeCluster()
        defer { owner.stop(); other.stop() }
        let connection = try other.connect()
        // A pipeline: every reply is read, then MOVED is thrown and the connection given up.
        let error = #expect(throws: RedisError.self) { try connection.pipeline(strings: [["PING"], ["LPUSH", "{ns}:jobs", "j"], ["TIME"]]) }
        #expect(error?.kind == .moved)
        #expect(error?.movedTo == RedisNode(host: "127.0.0.1", port: owner.port!))
        #expect(error?.isConnectionError == true)
        #expect(connection.isBroken)

        var route = RedisRoute(url: other.url)
        let isMove = route.note(error!)
        #expect(isMove)
        #expect(route.target.endpoint == .tcp(host: "127.0.0.1", port: owner.port!))
        let followed = try route.connect()
        #expect(try followed.command(["LPUSH", "{ns}:jobs", "j"]) == .integer(1))
        // A failed connection forgets the redirect: back to the URL's node.
        route.note(RedisError(.connection, "lost"))
        #expect(route.target == other.url)
    }

    @Test func aProbeLandsOneShotToolsOnTheOwner() throws {
        let (owner, other) = try twoNodeCluster()
        defer { owner.stop(); other.stop() }
        var route = RedisRoute(url: other.url)
        let connection = try route.connect(probe: ["LLEN", "{ns}:jobs"])
        #expect(try connection.command(["SET", "{ns}:keygroup", "x"]) == .status("OK"))
        #expect(connection.url.endpoint == .tcp(host: "127.0.0.1", port: owner.port!))
    }

    @Test func askIsFollowedOnceWithASKINGAndScriptsAreLoadedOnTheTargetFirst() throws {
        let (owner, other) = try twoNodeCluster()
        defer { owner.stop(); other.stop() }
        let o = try owner.connect(), t = try other.connect()
        let slot = String(try o.command(["CLUSTER", "KEYSLOT", "{ns}:jobs"]).integer!)
        let ownerID = try o.command(["CLUSTER", "MYID"]).string!, otherID = try t.command(["CLUSTER", "MYID"]).string!
        _ = try t.command(["CLUSTER", "SETSLOT", slot, "IMPORTING", ownerID])
        _ = try o.command(["CLUSTER", "SETSLOT", slot, "MIGRATING", otherID])
        // {ns}:jobs exists on neither node: the owner answers ASK, and the command runs on the target.
        let connection = try owner.connect()
        #expect(try connection.command(["LPUSH", "{ns}:jobs", "a", "b"]) == .integer(2))
        #expect(try o.command(["CLUSTER", "COUNTKEYSINSLOT", slot]) == .integer(0))
        #expect(try t.command(["CLUSTER", "COUNTKEYSINSLOT", slot]) == .integer(1))
        let script = RedisScript(name: "pop", source: "return redis.call('RPOP', KEYS[1])")
        #expect(try connection.evaluate(script, keys: [Array("{ns}:jobs".utf8)], arguments: []) == .bulk(Array("a".utf8)))
        #expect(!connection.isBroken)
        // Inside MULTI the ASK is not followed (ASKING covers one command): the caller sees it.
        let tx = #expect(throws: RedisError.self) { try connection.transaction([[Array("LPUSH".utf8), Array("{ns}:jobs".utf8), Array("c".utf8)]]) }
        #expect(tx?.message.contains("ASK") == true)
    }
}
