/// Arithmetic on numbers that come from outside (jobs, heartbeats, policies, flags): clamped to
/// the representable range instead of trapping, so no input can crash a worker or the CLI.
extension Int64 {
    /// `self + other`, clamped to `Int64.min...Int64.max`.
    @inlinable public func addingSaturating(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        if !overflow { return sum }
        return other > 0 ? .max : .min
    }

    /// `self - other`, clamped to `Int64.min...Int64.max`.
    @inlinable public func subtractingSaturating(_ other: Int64) -> Int64 {
        let (difference, overflow) = subtractingReportingOverflow(other)
        if !overflow { return difference }
        return other < 0 ? .max : .min
    }
}
