import DequeModule
import RedisSink
import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// The bounded queue between the inputs and the writer thread. Holds at most `limit` records; when
/// full, the oldest are dropped and counted. The writer waits on it with a deadline.
public final class RecordQueue: @unchecked Sendable {
    // All state below is guarded by `lock`.
    private let lock = ConditionLock()
    private var items = Deque<QueuedRecord>()
    private var closed = false
    private var _dropped: Int64 = 0
    private var _pushed: Int64 = 0
    public let limit: Int
    public let batchSize: Int

    public init(limit: Int, batchSize: Int) {
        self.limit = limit
        self.batchSize = batchSize
    }

    private func locked<T>(_ body: () -> T) -> T {
        lock.withLock { body() }
    }

    public var count: Int { locked { items.count } }
    /// Records dropped because the queue was full.
    public var dropped: Int64 { locked { _dropped } }
    /// Records ever pushed.
    public var pushed: Int64 { locked { _pushed } }
    public var isClosed: Bool { locked { closed } }

    /// Adds records; drops the oldest beyond `limit`. Returns how many were dropped.
    @discardableResult
    public func push(_ records: [QueuedRecord]) -> Int {
        locked {
            _pushed += Int64(records.count)
            items.append(contentsOf: records)
            var drop = 0
            if items.count > limit {
                drop = items.count - limit
                items.removeFirst(drop)
                _dropped += Int64(drop)
            }
            if items.count >= batchSize { lock.signal() }
            return drop
        }
    }

    /// Waits until `batchSize` records wait, the monotonic `deadline` (ns) passes, or the queue is
    /// closed; then takes up to `batchSize` of them, oldest first.
    public func take(deadline: Int64) -> [QueuedRecord] {
        lock.lock()
        defer { lock.unlock() }
        while items.count < batchSize, !closed {
            if !lock.wait(untilMonotonic: deadline) { break }
        }
        let n = min(batchSize, items.count)
        let out = Array(items.prefix(n))
        items.removeFirst(n)
        return out
    }

    /// Wakes the writer for its final drain; pushes after this are still accepted.
    public func close() {
        locked {
            closed = true
            lock.broadcast()
        }
    }

    /// Sleeps up to `ns`, waking early when the queue is closed. Returns whether it was closed.
    public func sleep(_ ns: Int64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let deadline = monotonicNanoseconds() + ns
        while !closed {
            if !lock.wait(untilMonotonic: deadline) { break }
        }
        return closed
    }
}
