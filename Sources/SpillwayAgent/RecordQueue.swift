import RedisSink
#if canImport(Glibc)
import Glibc
#endif

/// The bounded queue between the inputs and the writer thread. Holds at most `limit` records; when
/// full, the oldest are dropped and counted. The writer waits on it with a deadline.
public final class RecordQueue: @unchecked Sendable {
    // All state below is guarded by `mutex`.
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var items: [QueuedRecord] = []
    private var head = 0
    private var closed = false
    private var _dropped: Int64 = 0
    private var _pushed: Int64 = 0
    public let limit: Int
    public let batchSize: Int

    public init(limit: Int, batchSize: Int) {
        self.limit = limit
        self.batchSize = batchSize
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }

    public var count: Int { locked { items.count - head } }
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
            if items.count - head > limit {
                drop = items.count - head - limit
                head += drop
                _dropped += Int64(drop)
            }
            if head > 4096, head * 2 > items.count {
                items.removeSubrange(0..<head)
                head = 0
            }
            if items.count - head >= batchSize { pthread_cond_signal(&cond) }
            return drop
        }
    }

    /// Waits until `batchSize` records wait, the monotonic `deadline` (ns) passes, or the queue is
    /// closed; then takes up to `batchSize` of them, oldest first.
    public func take(deadline: Int64) -> [QueuedRecord] {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while items.count - head < batchSize, !closed {
            if pthread_cond_timedwait(&cond, &mutex, &ts) == ETIMEDOUT { break }
        }
        let n = min(batchSize, items.count - head)
        let out = Array(items[head..<(head + n)])
        head += n
        if head == items.count {
            items.removeAll(keepingCapacity: items.capacity <= 4 * batchSize)
            head = 0
        }
        return out
    }

    /// Wakes the writer for its final drain; pushes after this are still accepted.
    public func close() {
        locked {
            closed = true
            pthread_cond_broadcast(&cond)
        }
    }

    /// Sleeps up to `ns`, waking early when the queue is closed. Returns whether it was closed.
    public func sleep(_ ns: Int64) -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let deadline = monotonicNanoseconds() + ns
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while !closed {
            if pthread_cond_timedwait(&cond, &mutex, &ts) == ETIMEDOUT { break }
        }
        return closed
    }
}
