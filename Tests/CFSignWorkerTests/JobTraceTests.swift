import CFSignCore
import CFSignCrypto
import Testing
import Tracing
@testable import CFSignWorker

/// A job's span record across retries (issue 19): a job held for its key's holder keeps one span
/// from its first try to its reply, its retries as events.
@Suite("JobTrace")
struct JobTraceTests {
    private func instant(_ nanoseconds: UInt64) -> DefaultTracerClock.Instant {
        DefaultTracerClock.Instant(nanosecondsSinceEpoch: nanoseconds)
    }

    private func trace(start: UInt64, keyID: String) -> JobTrace {
        var t = JobTrace(now: instant(start))
        t.signStart = instant(start + 10)
        t.signEnd = instant(start + 20)
        t.keyID = keyID
        t.keyLocation = "kms"
        return t
    }

    @Test func aRetryKeepsTheFirstTrysStartAndParsedAndBecomesARetryEvent() {
        var first = trace(start: 1_000, keyID: "K1")
        first.context = TraceContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        let second = trace(start: 5_000, keyID: "K1").continuing(first)
        let third = trace(start: 9_000, keyID: "K2").continuing(second)

        #expect(third.parseStart.nanosecondsSinceEpoch == 1_000)
        #expect(third.signStart?.nanosecondsSinceEpoch == 1_010)
        #expect(third.retries.map(\.nanosecondsSinceEpoch) == [5_000, 9_000])
        // The last try is the one that answered: its end and its key (a rotation may have moved it).
        #expect(third.signEnd?.nanosecondsSinceEpoch == 9_020)
        #expect(third.keyID == "K2")
        #expect(third.context == first.context)
    }

    @Test func aFirstTryContinuesNothing() {
        let only = trace(start: 1_000, keyID: "K1")
        let same = only.continuing(nil)
        #expect(same.parseStart.nanosecondsSinceEpoch == 1_000)
        #expect(same.retries.isEmpty)
    }

    @Test func aKeysHolderKindNamesNoURIOrARN() {
        let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        #expect(KeyLocation.awsKMS(keyID: arn).kind == "kms")
        #expect(KeyLocation.pkcs11(uri: "pkcs11:token=t;object=k").kind == "pkcs11")
        #expect(KeyLocation.memory.kind == "memory")
    }
}
