import DequeModule
import RedisSink
import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// The bounded queue between the inputs and the writer. Holds at most `limit` records in two lanes
/// taken in arrival order: metrics, which drop their oldest when the queue is full (and count them),
/// and tailed lines, which are never dropped: their producer waits for room instead (the lines are
/// still in their files), and they are also bounded in bytes (`lineBytesLimit`).
public final class RecordQueue: @unchecked Sendable {
    struct Entry {
        var seq: UInt64
        var record: QueuedRecord
        /// For a line: its approximate bytes (counted against `lineBytesLimit`).
        var bytes = 0
    }

    // All state below is guarded by `lock`.
    private let lock = ConditionLock()
    private var metrics = Deque<Entry>()
    private var lines = Deque<Entry>()
    private var lineBytes = 0
    private var nextSeq: UInt64 = 0
    private var closed = false
    private var _dropped: Int64 = 0
    private var _pushed: Int64 = 0
    public let limit: Int
    public let batchSize: Int
    /// Bytes of tailed lines waiting, at most (a line can be up to max_line_bytes).
    public let lineBytesLimit: Int
    /// Tailed lines waiting, at most: a few batches keep the writer busy, and the rest of the lines
    /// wait in their files rather than in memory.
    public let lineLimit: Int

    /// `carrying`: the queue this one replaces at a reload; its counts (pushed, dropped) go on here,
    /// so the run's counters stay whole. (It was drained before: nothing waits in it.)
    public init(limit: Int, batchSize: Int, lineBytesLimit: Int = 64 << 20, carrying previous: RecordQueue? = nil) {
        self.limit = limit
        self.batchSize = batchSize
        self.lineBytesLimit = lineBytesLimit
        self.lineLimit = max(1, min(limit, 4 * batchSize))
        if let previous {
            _pushed = previous.pushed
            _dropped = previous.dropped
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        lock.withLock { body() }
    }

    private var total: Int { metrics.count + lines.count }
    public var count: Int { locked { total } }
    /// Records dropped because the queue was full.
    public var dropped: Int64 { locked { _dropped } }
    /// Records ever pushed.
    public var pushed: Int64 { locked { _pushed } }
    public var isClosed: Bool { locked { closed } }

    /// Adds metric records; when the queue is full, drops the oldest metrics (and, when lines fill
    /// it, these). Returns how many were dropped.
    @discardableResult
    public func push(_ records: [QueuedRecord]) -> Int {
        locked {
            _pushed += Int64(records.count)
            for r in records {
                metrics.append(Entry(seq: nextSeq, record: r))
                nextSeq += 1
            }
            var drop = 0
            while total > limit, !metrics.isEmpty {
                metrics.removeFirst()
                drop += 1
            }
            _dropped += Int64(drop)
            if total >= batchSize { lock.broadcast() }
            return drop
        }
    }

    /// Approximate memory of a record: its strings plus a fixed overhead; a line's message as 4/3
    /// of its bytes (the most its chunks can hold per byte: see `LineChunkWriter`).
    static func approximateBytes(_ q: borrowing QueuedRecord) -> Int {
        let r = q.record
        var n = 96 + r.name.utf8.count + Int(q.message?.count ?? 0) * 4 / 3
        for t in r.tags { n += 32 + t.key.utf8.count + t.value.utf8.count }
        for f in r.fields {
            n += 32 + f.key.utf8.count
            if case .string(let s) = f.value { n += s.utf8.count }
        }
        return n
    }

    /// Adds tailed lines, waiting while there is no room for them. Returns false, without adding
    /// them, once `shouldStop` says so (checked every 100 ms while waiting).
    /// The records are moved into the queue, not copied (a copy would retain every string of each
    /// record, and freeing the caller's array release them again).
    public func pushLines(_ records: consuming [QueuedRecord], shouldStop: () -> Bool) -> Bool {
        var sizes: [Int] = []
        sizes.reserveCapacity(records.count)
        for i in records.indices { sizes.append(Self.approximateBytes(records[i])) }
        let bytes = sizes.reduce(0, +)
        lock.lock()
        defer { lock.unlock() }
        while (total > 0 && total + records.count > limit) || (!lines.isEmpty && lines.count + records.count > lineLimit)
            || (lineBytes > 0 && lineBytes + bytes > lineBytesLimit) {
            if shouldStop() { return false }
            _ = lock.wait(untilMonotonic: monotonicNanoseconds() + 100_000_000)
        }
        if shouldStop() { return false }
        _pushed += Int64(records.count)
        // Through a buffer pointer: its swaps move the records (see `TailService`'s deliver).
        records.withUnsafeMutableBufferPointer { $0.reverse() }
        sizes.reverse()
        while let r = records.popLast() {
            lines.append(Entry(seq: nextSeq, record: r, bytes: sizes.removeLast()))
            nextSeq += 1
        }
        lineBytes += bytes
        if total >= batchSize { lock.broadcast() }
        return true
    }

    /// Waits until `batchSize` records wait, the monotonic `deadline` (ns) passes, or the queue is
    /// closed; then takes up to `batchSize` of them, oldest first.
    public func take(deadline: Int64) -> [QueuedRecord] {
        var out: [QueuedRecord] = []
        take(deadline: deadline, into: &out)
        return out
    }

    /// The same, into `out` (emptied first, its storage kept: a batch's array is over 128 KiB, so
    /// a new one per batch would be mapped and unmapped each time, and an unmapping interrupts
    /// every core to flush its TLB).
    public func take(deadline: Int64, into out: inout [QueuedRecord]) {
        out.removeAll(keepingCapacity: true)
        lock.lock()
        defer { lock.unlock() }
        while total < batchSize, !closed {
            if !lock.wait(untilMonotonic: deadline) { break }
        }
        let n = min(batchSize, total)
        out.reserveCapacity(n)
        // Entries are moved out, not copied (a copy would retain every string of the record, and
        // the removal release them again).
        while out.count < n {
            if !lines.isEmpty, metrics.isEmpty || lines[0].seq < metrics[0].seq {
                let l = lines.removeFirst()
                lineBytes -= l.bytes
                out.append(l.record)
            } else if let m = metrics.popFirst() {
                out.append(m.record)
            }
        }
        if lines.isEmpty { lineBytes = 0 }
        // Line producers wait for room.
        if n > 0 { lock.broadcast() }
    }

    /// Tailed lines let go at a stop (their offsets not committed): they are read again from their
    /// files, by the next pipeline (a reload) or the next start, and counted as collected then.
    public func uncount(_ n: Int) {
        locked { _pushed -= Int64(n) }
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
