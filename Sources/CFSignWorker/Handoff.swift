import CFSignSync
import Dispatch
import Synchronization

/// A bounded FIFO between two pipeline threads: `put` waits while it is full (back-pressure: the
/// worker never holds more than a few batches), `take` waits while it is empty, and after `close`
/// takers drain what is left and then get nil.
final class Handoff<Item: Sendable>: Sendable {
    // After `close` one extra `filled` signal wakes a taker that finds the queue empty: that empty
    // queue is what tells it the handoff is closed, so no flag is needed.
    private let items = Locked<[Item]>([])
    private let filled = DispatchSemaphore(value: 0)
    private let free: DispatchSemaphore

    init(capacity: Int) { free = DispatchSemaphore(value: capacity) }

    func put(_ item: Item) {
        free.wait()
        items.withLock { $0.append(item) }
        filled.signal()
    }

    /// The next item, or nil once closed and empty.
    func take() -> Item? {
        filled.wait()
        let item: Item? = items.withLock { queue in
            if queue.isEmpty { return nil }
            return queue.removeFirst()
        }
        if item != nil { free.signal() } else { filled.signal() }  // keep waking other takers after close
        return item
    }

    /// No more puts; takers get the rest, then nil.
    func close() {
        filled.signal()
    }
}
