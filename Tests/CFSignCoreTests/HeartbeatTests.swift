import CFSignCore
import Testing

@Suite("Heartbeat")
struct HeartbeatTests {
    /// Every field set, as a worker with a signature cache writes it.
    let full = Heartbeat(
        id: "w1-42-ab12cd34", host: "w1", pid: 42, startedAt: 1_700_000_000_000, seenAt: 1_700_000_005_000,
        jobs: 10, errors: 2, dead: 1, keyGroupVersion: 3, keyGroupRefusal: .init(version: 4, reason: "key \"K\": missing"),
        state: "running", reconnects: 5, lastError: "connection lost", clockSkewMilliseconds: -12, redisWarning: "evicts",
        cacheHits: 7, cacheMisses: 8, concurrency: 2, batchSize: 64)

    func decoded(_ text: String) -> Heartbeat? { Heartbeat(decoding: Array(text.utf8)) }

    @Test("the encoder writes the worker's heartbeat bytes: contract order, compact, nullable fields as null")
    func encoderBytes() {
        #expect(full.json == #"{"id":"w1-42-ab12cd34","host":"w1","pid":42,"started_at":1700000000000,"seen_at":1700000005000,"jobs":10,"errors":2,"dead":1,"keygroup_version":3,"keygroup_refusal":{"version":4,"reason":"key \"K\": missing"},"key_unavailable":null,"state":"running","reconnects":5,"last_error":"connection lost","clock_skew_ms":-12,"redis_warning":"evicts","cache_hits":7,"cache_misses":8,"concurrency":2,"batch_size":64}"#)
    }

    @Test("a worker without a group, refusal, error, warning or cache writes nulls and leaves the cache counters out")
    func encoderNulls() {
        var h = full
        h.keyGroupVersion = nil
        h.keyGroupRefusal = .init(version: nil, reason: "not JSON")
        h.lastError = nil
        h.redisWarning = nil
        h.cacheHits = nil
        h.cacheMisses = nil
        h.state = "draining"
        #expect(h.json == #"{"id":"w1-42-ab12cd34","host":"w1","pid":42,"started_at":1700000000000,"seen_at":1700000005000,"jobs":10,"errors":2,"dead":1,"keygroup_version":null,"keygroup_refusal":{"version":null,"reason":"not JSON"},"key_unavailable":null,"state":"draining","reconnects":5,"last_error":null,"clock_skew_ms":-12,"redis_warning":null,"concurrency":2,"batch_size":64}"#)
        h.keyGroupRefusal = nil
        #expect(h.json.contains(#""keygroup_refusal":null,"#))
    }

    @Test("what the encoder writes decodes to the same heartbeat")
    func roundTrip() {
        #expect(decoded(full.json) == full)
        var sparse = full
        sparse.keyGroupVersion = nil
        sparse.keyGroupRefusal = nil
        sparse.cacheHits = nil
        sparse.cacheMisses = nil
        #expect(decoded(sparse.json) == sparse)
    }

    @Test("bytes that are not JSON are no heartbeat; JSON that is not an object is a heartbeat with no fields")
    func notAnObject() {
        #expect(decoded("{\"id\":") == nil)
        #expect(decoded("[1,2]") == Heartbeat())
        #expect(decoded("17") == Heartbeat())
    }

    @Test("numbers out of their range are nil, never a trap", arguments: [
        (#"{"pid":-1}"#, "pid"), (#"{"pid":2147483648}"#, "pid"),
        (#"{"seen_at":-5}"#, "seen_at"), (#"{"seen_at":9223372036854775807}"#, "seen_at"),
        (#"{"started_at":253402300800000}"#, "started_at"),
        (#"{"jobs":-1}"#, "jobs"), (#"{"errors":-9223372036854775808}"#, "errors"), (#"{"dead":-3}"#, "dead"),
        (#"{"reconnects":-1}"#, "reconnects"), (#"{"cache_hits":-1}"#, "cache_hits"),
        (#"{"keygroup_version":0}"#, "keygroup_version"), (#"{"keygroup_version":-7}"#, "keygroup_version"),
        (#"{"concurrency":0}"#, "concurrency"), (#"{"batch_size":-1}"#, "batch_size"),
    ])
    func outOfRange(text: String, field: String) {
        #expect(decoded(text) == Heartbeat(), "\(field) out of range was kept: \(text)")
    }

    @Test("numbers that are not 64-bit integers (fractions, exponents, too large) are nil")
    func notIntegers() {
        for text in [#"{"jobs":1.5}"#, #"{"jobs":1e3}"#, #"{"jobs":99999999999999999999999}"#, #"{"keygroup_version":-99999999999999999999}"#,
                     #"{"seen_at":"1700000000000"}"#, #"{"pid":true}"#, #"{"jobs":null}"#] {
            #expect(decoded(text) == Heartbeat(), "kept a non-integer: \(text)")
        }
    }

    @Test("the largest version and time are kept, so a reader can refuse to go above Int64.max")
    func boundaries() {
        let h = decoded(#"{"keygroup_version":9223372036854775807,"seen_at":253402300799000,"pid":2147483647,"clock_skew_ms":-9223372036854775808}"#)
        #expect(h?.keyGroupVersion == Int64.max)
        #expect(h?.seenAt == 253_402_300_799_000)
        #expect(h?.pid == Int64(Int32.max))
        #expect(h?.clockSkewMilliseconds == Int64.min)
    }

    @Test("strings of the wrong type are nil")
    func wrongTypes() {
        #expect(decoded(#"{"id":5,"host":[],"state":{},"last_error":1,"redis_warning":false}"#) == Heartbeat())
    }

    @Test("a refusal needs a string reason; its version is kept whatever integer it is, else nil")
    func refusals() {
        #expect(decoded(#"{"keygroup_refusal":{"version":3}}"#)?.keyGroupRefusal == nil)
        #expect(decoded(#"{"keygroup_refusal":"broken"}"#)?.keyGroupRefusal == nil)
        #expect(decoded(#"{"keygroup_refusal":{"version":-3,"reason":"r"}}"#)?.keyGroupRefusal == .init(version: -3, reason: "r"))
        #expect(decoded(#"{"keygroup_refusal":{"version":"3","reason":"r"}}"#)?.keyGroupRefusal == .init(version: nil, reason: "r"))
        #expect(decoded(#"{"keygroup_refusal":{"version":1.5,"reason":"r"}}"#)?.keyGroupRefusal == .init(version: nil, reason: "r"))
    }
}
