import Foundation

/// A value shared between threads behind one lock: the only way cfsign shares mutable state
/// (besides atomics).
///
/// Why not `Synchronization.Mutex`: on Linux it locks with raw futex calls that ThreadSanitizer
/// does not see, so every access under it is reported as a race and `scripts/test --sanitize
/// thread` could not tell real races from noise. `NSLock` is a pthread mutex, which ThreadSanitizer
/// understands; uncontended, it costs about the same.
public final class Locked<Value>: @unchecked Sendable {
    // `value` is only touched with `lock` held.
    private var value: Value
    private let lock = NSLock()

    public init(_ value: Value) { self.value = value }

    /// Runs `body` with exclusive access to the value.
    @inlinable
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try _withLock(body)
    }

    @usableFromInline
    func _withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
