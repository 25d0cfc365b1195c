import CFSignAdmin
import CFSignCore
import Testing

/// `FleetSnapshot.read` and the `cfsign status` verdict, against a real redis-server.
@Suite("FleetSnapshot")
struct FleetSnapshotTests {
    func snapshot(_ fleet: TestFleet) throws -> FleetSnapshot { try FleetSnapshot.read(fleet.redis, fleet.namespace) }

    @Test("no registered worker: no live worker")
    func empty() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 1))
        #expect(try snapshot(fleet).problem == .noLiveWorker)
    }

    @Test("registered workers whose heartbeat expired, or is not JSON, are not live")
    func deadWorkers() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 1))
        try fleet.register("expired", heartbeat: nil)
        try fleet.register("garbled", heartbeat: "{\"id\":")
        let s = try snapshot(fleet)
        #expect(s.workers.map(\.id) == ["expired", "garbled"])
        #expect(s.live.isEmpty)
        #expect(s.problem == .noLiveWorker)
    }

    @Test("a refusal is reported first, naming the first refusing worker and counting the others")
    func refusal() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 2))
        try fleet.live("a", version: 2)
        try fleet.live("b", version: 1, refusal: .init(version: 2, reason: "key \"K\": missing"))
        try fleet.live("c", version: 1, refusal: .init(version: nil, reason: "not JSON"))
        #expect(try snapshot(fleet).problem == .refusal(worker: "b", .init(version: 2, reason: "key \"K\": missing"), others: 1))
    }

    @Test("live workers but no stored group")
    func noGroup() throws {
        let fleet = try TestFleet()
        try fleet.live("a", version: nil)
        #expect(try snapshot(fleet).problem == .noKeyGroup)
    }

    @Test("a stored group without an integer version is unreadable", arguments: ["not json", #"{"active":"K"}"#, #"{"version":"3"}"#])
    func unreadableVersion(stored: String) throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(stored)
        try fleet.live("a", version: 3)
        #expect(try snapshot(fleet).problem == .unreadableStoredVersion)
    }

    @Test("workers not on the stored version are counted, naming the first")
    func behind() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 3))
        try fleet.live("a", version: 3)
        try fleet.live("b", version: 2)
        try fleet.live("c", version: nil)
        #expect(try snapshot(fleet).problem == .behind(2, of: 3, stored: 3, first: "b", firstVersion: 2))
    }

    @Test("every live worker on the stored version and none refusing: no problem, dead workers aside")
    func agreed() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 3))
        try fleet.live("a", version: 3)
        try fleet.live("b", version: 3)
        try fleet.register("gone", heartbeat: nil)
        let s = try snapshot(fleet)
        #expect(s.problem == nil)
        #expect(s.versions == [3])
    }

    @Test("queue, dead and in-flight lengths and Redis's clock are read")
    func counts() throws {
        let fleet = try TestFleet()
        let ns = fleet.namespace
        _ = try fleet.redis.command(["LPUSH", ns.jobs, "j1", "j2"])
        _ = try fleet.redis.command(["LPUSH", ns.dead, "d1"])
        _ = try fleet.redis.command(["LPUSH", ns.inflight(worker: "a"), "x", "y", "z"])
        try fleet.live("a", version: 1)
        let s = try snapshot(fleet)
        #expect(s.queued == 2)
        #expect(s.dead == 1)
        #expect(s.inflightTotal == 3)
        #expect(s.redisTimeMilliseconds > 1_700_000_000_000)
    }

    @Test("a hostile heartbeat is read without trapping: out-of-range numbers are nil, the document is kept whole")
    func hostileHeartbeat() throws {
        let fleet = try TestFleet()
        let text = #"{"seen_at":9223372036854775807,"jobs":-1,"keygroup_version":-5,"keygroup_refusal":{"version":9223372036854775807,"reason":"r"},"pid":1e99}"#
        try fleet.register("h", heartbeat: text)
        let s = try snapshot(fleet)
        let w = try #require(s.live.first)
        #expect(w.heartbeat?.seenAt == nil)
        #expect(w.heartbeat?.jobs == nil)
        #expect(w.keyGroupVersion == nil)
        #expect(w.document == (try JSONReader.parse(text)))
        // Its refused version is Int64.max: there is no next version.
        #expect(s.highestVersion == Int64.max)
        #expect(s.nextVersion == nil)
    }

    @Test("the redacted group shows an inline private key's length, never the key")
    func redaction() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(#"{"version":1,"active":"K1","keys":[{"id":"K1","private_key_pem":"SECRET"},{"id":"K2","private_key_file":"/k.pem"}]}"#)
        var w = JSONWriter()
        w.value(try #require(try snapshot(fleet).redactedKeyGroup))
        #expect(w.string == #"{"version":1,"active":"K1","keys":[{"id":"K1","private_key_pem":"<inline private key, 6 bytes, not shown>"},{"id":"K2","private_key_file":"/k.pem"}]}"#)
    }
}
