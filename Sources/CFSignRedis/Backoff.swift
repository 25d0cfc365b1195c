/// Capped exponential backoff with "equal jitter" (a delay drawn from [ceiling/2, ceiling]), for
/// reconnecting: many workers that lost one Redis do not all come back in the same millisecond, and
/// none retries much sooner than the schedule says.
public struct Backoff: Sendable {
    public let initial: Double
    public let maximum: Double
    private var attempt = 0

    public init(initial: Double = 0.1, maximum: Double = 5) {
        self.initial = initial
        self.maximum = maximum
    }

    /// Seconds to wait before the next attempt.
    public mutating func next() -> Double {
        let ceiling = min(maximum, initial * Double(1 << min(attempt, 20)))
        attempt += 1
        return Double.random(in: (ceiling / 2)...ceiling)
    }

    public mutating func reset() { attempt = 0 }

    public var attempts: Int { attempt }
}
