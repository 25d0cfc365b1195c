import CFSignAdmin
import CFSignCore
import CFSignCrypto
import CFSignRedis
import Testing

/// `KeyGroupStore` against a real redis-server: versions only grow, conflicts are retried,
/// rotation's order, and that a refusal writes nothing.
@Suite("KeyGroupStore")
struct KeyGroupStoreTests {
    func store(_ fleet: TestFleet) -> KeyGroupStore { KeyGroupStore(connection: fleet.redis, namespace: fleet.namespace) }

    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// The error `body` threw, or nil when it did not throw.
    func refusal(_ body: () throws(KeyGroupStoreError) -> KeyGroupStore.Stored) -> KeyGroupStoreError? {
        do { _ = try body(); return nil } catch { return error }
    }

    // MARK: Versions only grow

    @Test("a group without a version gets 1 when nothing is stored and no worker is live")
    func firstVersion() throws {
        let fleet = try TestFleet()
        let stored = try store(fleet).set(json: bytes(TestFleet.groupJSON(version: nil)))
        #expect(stored.document.version == 1)
        #expect(try fleet.storedDocument() == stored.document)
    }

    @Test("the next version is above the stored group and every live heartbeat, refused versions included")
    func nextVersionAboveEverything() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 3))
        try fleet.live("a", version: 7)
        try fleet.live("b", version: 3, refusal: .init(version: 9, reason: "key missing"))
        let stored = try store(fleet).set(json: bytes(TestFleet.groupJSON(version: nil)))
        #expect(stored.document.version == 10)
    }

    @Test("a registered worker whose heartbeat expired does not count")
    func expiredHeartbeatIgnored() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 3))
        try fleet.register("gone", heartbeat: nil)
        #expect(try store(fleet).set(json: bytes(TestFleet.groupJSON(version: nil))).document.version == 4)
    }

    @Test("a version not above a live worker's is refused and nothing is written")
    func versionNotAboveLiveWorker() throws {
        let fleet = try TestFleet()
        let before = TestFleet.groupJSON(version: 2)
        try fleet.storeGroup(before)
        try fleet.live("a", version: 6)
        let error = refusal { () throws(KeyGroupStoreError) in try store(fleet).set(json: bytes(TestFleet.groupJSON(version: 6))) }
        guard case .versionNotAbove(6, highest: 6, next: 7)? = error else { Issue.record("expected versionNotAbove(6, 6, 7), got \(String(describing: error))"); return }
        #expect(try fleet.storedGroup() == bytes(before))
    }

    @Test("a version not above the stored group's is refused and nothing is written")
    func versionNotAboveStored() throws {
        let fleet = try TestFleet()
        let before = TestFleet.groupJSON(version: 5)
        try fleet.storeGroup(before)
        let error = refusal { () throws(KeyGroupStoreError) in try store(fleet).set(json: bytes(TestFleet.groupJSON(version: 4))) }
        guard case .versionNotAbove(4, highest: 5, next: 6)? = error else { Issue.record("expected versionNotAbove(4, 5, 6), got \(String(describing: error))"); return }
        #expect(try fleet.storedGroup() == bytes(before))
    }

    @Test("a live worker reporting Int64.max leaves no version to use: refused, nothing written")
    func int64MaxFromHeartbeat() throws {
        let fleet = try TestFleet()
        try fleet.live("hostile", version: Int64.max)
        let error = refusal { () throws(KeyGroupStoreError) in try store(fleet).set(json: bytes(TestFleet.groupJSON(version: nil))) }
        guard case .noVersionAbove(Int64.max)? = error else { Issue.record("expected noVersionAbove(Int64.max), got \(String(describing: error))"); return }
        #expect(try fleet.storedGroup() == nil)
    }

    @Test("a stored group at Int64.max leaves no version to use: refused, nothing written")
    func int64MaxStored() throws {
        let fleet = try TestFleet()
        let before = TestFleet.groupJSON(version: Int64.max)
        try fleet.storeGroup(before)
        let error = refusal { () throws(KeyGroupStoreError) in try store(fleet).set(json: bytes(TestFleet.groupJSON(version: nil))) }
        guard case .noVersionAbove(Int64.max)? = error else { Issue.record("expected noVersionAbove(Int64.max), got \(String(describing: error))"); return }
        #expect(try fleet.storedGroup() == bytes(before))
    }

    // MARK: WATCH / MULTI

    @Test("a group changed by another writer between WATCH and EXEC is read again and stored above it")
    func watchConflictRetried() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 1))
        let other = try fleet.connect()
        var calls: [(next: Int64, current: Int64?)] = []
        let stored = try store(fleet).store { (next, current) throws(KeyGroupStoreError) in
            calls.append((next, current?.version))
            if calls.count == 1 { _ = try? other.command(["SET", fleet.namespace.keyGroup, TestFleet.groupJSON(version: 4)]) }
            return try KeyGroupStore.document(fromJSON: Array(TestFleet.groupJSON(version: nil).utf8), nextVersion: next)
        }
        #expect(calls.map(\.next) == [2, 5])
        #expect(calls.map(\.current) == [1, 4])
        #expect(stored.document.version == 5)
        #expect(try fleet.storedDocument()?.version == 5)
    }

    @Test("a group that changes in every attempt gives up without writing")
    func keepsChanging() throws {
        let fleet = try TestFleet()
        let other = try fleet.connect()
        var calls = 0
        let error = refusal { () throws(KeyGroupStoreError) in
            try store(fleet).store { (next, _) throws(KeyGroupStoreError) in
                calls += 1
                _ = try? other.command(["SET", fleet.namespace.keyGroup, TestFleet.groupJSON(version: Int64(100 + calls))])
                return try KeyGroupStore.document(fromJSON: Array(TestFleet.groupJSON(version: nil).utf8), nextVersion: next)
            }
        }
        guard case .keptChanging? = error else { Issue.record("expected keptChanging, got \(String(describing: error))"); return }
        #expect(calls == 5)
        #expect(try fleet.storedDocument()?.version == Int64(100 + calls))
    }

    @Test("the new version is announced on {NS}:keygroup:changed")
    func published() throws {
        let fleet = try TestFleet()
        let subscriber = try fleet.connect()
        try subscriber.subscribe([fleet.namespace.keyGroupChanged])
        let stored = try store(fleet).set(json: bytes(TestFleet.groupJSON(version: 8)))
        #expect(stored.subscribers == 1)
        let message = try subscriber.nextMessage(timeout: 5)
        #expect(message?.channel == fleet.namespace.keyGroupChanged)
        #expect(message?.payload == bytes("8"))
    }

    // MARK: Refusals write nothing

    @Test("a file that is not JSON, or not a key group, is refused and nothing is written")
    func invalidDocuments() throws {
        let fleet = try TestFleet()
        let notJSON = refusal { () throws(KeyGroupStoreError) in try store(fleet).set(json: bytes("{\"version\": 1,")) }
        guard case .notJSON? = notJSON else { Issue.record("expected notJSON, got \(String(describing: notJSON))"); return }
        let noKeys = refusal { () throws(KeyGroupStoreError) in try store(fleet).set(json: bytes(#"{"version":1,"active":"KACTIVE0001","keys":[]}"#)) }
        guard case .invalidDocument? = noKeys else { Issue.record("expected invalidDocument, got \(String(describing: noKeys))"); return }
        #expect(try fleet.storedGroup() == nil)
    }

    @Test("with checking, a key file that does not load refuses the group and nothing is written")
    func checkingRefuses() throws {
        let fleet = try TestFleet()
        let error = refusal { () throws(KeyGroupStoreError) in
            try store(fleet).set(json: bytes(TestFleet.groupJSON(version: 1)), checking: KeyLoadOptions(allowInlineKeys: true))
        }
        guard case .keysRefused(let reason)? = error else { Issue.record("expected keysRefused, got \(String(describing: error))"); return }
        #expect(reason.reason.contains("/nonexistent/KACTIVE0001.pem"))
        #expect(try fleet.storedGroup() == nil)
    }

    @Test("a refusal leaves the connection usable: the WATCH is released")
    func refusalUnwatches() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 5))
        _ = refusal { () throws(KeyGroupStoreError) in try store(fleet).set(json: bytes(TestFleet.groupJSON(version: 1))) }
        // Changed by someone else now: a still-active WATCH would make this transaction fail.
        _ = try fleet.connect().command(["SET", fleet.namespace.keyGroup, TestFleet.groupJSON(version: 6)])
        #expect(try fleet.redis.transaction([[Array("SET".utf8), Array("k".utf8), Array("v".utf8)]]) != nil)
    }

    // MARK: Rotation

    @Test("rotate puts the new key first and active, then the previous active key, then the others in order")
    func rotateOrder() throws {
        let fleet = try TestFleet()
        try fleet.storeGroup(TestFleet.groupJSON(version: 4, ids: ["KAAAAAAAAA1", "KBBBBBBBBB2", "KCCCCCCCCC3"], active: "KBBBBBBBBB2"))
        let newKey = KeyGroupDocument.Key(id: "KNEWNEWNEW4", source: .file("/keys/new.pem"))
        let stored = try store(fleet).rotate(to: newKey, keep: 20)
        #expect(stored.document.version == 5)
        #expect(stored.document.active == "KNEWNEWNEW4")
        #expect(stored.document.keys.map(\.id) == ["KNEWNEWNEW4", "KBBBBBBBBB2", "KAAAAAAAAA1", "KCCCCCCCCC3"])
        #expect(try fleet.storedDocument() == stored.document)
    }

    @Test("rotate keeps at most --keep previous keys, the previous active one first")
    func rotateKeepLimits() throws {
        let current = try KeyGroupDocument(version: 4, active: "KBBBBBBBBB2", keys: ["KAAAAAAAAA1", "KBBBBBBBBB2", "KCCCCCCCCC3"].map { .init(id: $0, source: .file("/k/\($0).pem")) })
        let newKey = KeyGroupDocument.Key(id: "KNEWNEWNEW4", source: .file("/keys/new.pem"))
        #expect(try KeyGroupStore.rotated(current, to: newKey, keep: 0, version: 5).keys.map(\.id) == ["KNEWNEWNEW4"])
        #expect(try KeyGroupStore.rotated(current, to: newKey, keep: 1, version: 5).keys.map(\.id) == ["KNEWNEWNEW4", "KBBBBBBBBB2"])
        #expect(try KeyGroupStore.rotated(current, to: newKey, keep: 2, version: 5).keys.map(\.id) == ["KNEWNEWNEW4", "KBBBBBBBBB2", "KAAAAAAAAA1"])
    }

    @Test("rotating to a key id already in the group replaces it instead of listing it twice")
    func rotateToExistingID() throws {
        let current = try KeyGroupDocument(version: 4, active: "KBBBBBBBBB2", keys: ["KAAAAAAAAA1", "KBBBBBBBBB2"].map { .init(id: $0, source: .file("/k/\($0).pem")) })
        let again = KeyGroupDocument.Key(id: "KAAAAAAAAA1", source: .file("/keys/moved.pem"))
        let rotated = try KeyGroupStore.rotated(current, to: again, keep: 2, version: 5)
        #expect(rotated.keys == [again, .init(id: "KBBBBBBBBB2", source: .file("/k/KBBBBBBBBB2.pem"))])
    }

    @Test("rotate with no stored group stores the new key alone, above any live worker's version")
    func rotateWithoutGroup() throws {
        let fleet = try TestFleet()
        try fleet.live("a", version: 2)
        let stored = try store(fleet).rotate(to: .init(id: "KNEWNEWNEW4", source: .file("/keys/new.pem")), keep: 2)
        #expect(stored.document.version == 3)
        #expect(stored.document.keys.map(\.id) == ["KNEWNEWNEW4"])
    }
}
