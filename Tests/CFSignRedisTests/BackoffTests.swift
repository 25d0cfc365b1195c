import CFSignRedis
import Testing

@Suite("Reconnect backoff: capped exponential with jitter")
struct BackoffTests {
    @Test func delaysGrowAndStayWithinHalfToFullCeiling() {
        var backoff = Backoff(initial: 0.1, maximum: 100)
        var ceiling = 0.1
        var previous = 0.0
        for _ in 0..<8 {
            let delay = backoff.next()
            #expect(delay >= ceiling / 2 && delay <= ceiling, "delay \(delay) outside [\(ceiling / 2), \(ceiling)]")
            #expect(delay >= previous, "delays never shrink: the next floor is the previous ceiling")
            previous = delay
            ceiling *= 2
        }
        #expect(backoff.attempts == 8)
    }

    @Test func delaysAreCappedAtTheMaximum() {
        var backoff = Backoff(initial: 0.1, maximum: 2)
        for _ in 0..<100 {
            let delay = backoff.next()
            #expect(delay <= 2)
        }
        // Far past the cap the window is [maximum/2, maximum].
        for _ in 0..<50 {
            let delay = backoff.next()
            #expect(delay >= 1 && delay <= 2)
        }
    }

    @Test func delaysAreJittered() {
        var values = Set<Double>()
        for _ in 0..<20 {
            var backoff = Backoff(initial: 1, maximum: 1)
            values.insert(backoff.next())
        }
        #expect(values.count > 1, "many clients must not all come back at the same instant")
    }

    @Test func resetStartsOverFromTheInitialDelay() {
        var backoff = Backoff(initial: 0.1, maximum: 5)
        for _ in 0..<10 { _ = backoff.next() }
        backoff.reset()
        #expect(backoff.attempts == 0)
        let delay = backoff.next()
        #expect(delay >= 0.05 && delay <= 0.1)
    }
}
