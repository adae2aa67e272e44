import Foundation
import SpillwayCore

/// Checkpoints the buffer's WAL from a thread of its own, over a connection of its own, so the fsync
/// a checkpoint does never stalls an append (the agent's connection would otherwise checkpoint in
/// the middle of a commit, every 64 MB of WAL). PASSIVE: it never waits for, nor blocks, the writer;
/// the writer starts the WAL over once everything in it is in the database. The agent's connection
/// keeps a far larger automatic checkpoint as a bound, should this thread fall behind.
final class Checkpointer: @unchecked Sendable {
    private let lock = ConditionLock()
    // Guarded by `lock`.
    private var stopping = false
    private var stopped = false

    /// Starts the thread; `interval` ns between checkpoints.
    init(path: String, interval: Int64) {
        let thread = Thread { [self] in loop(path: path, interval: interval) }
        thread.start()
    }

    private func loop(path: String, interval: Int64) {
        let db = try? SQLiteDatabase(path: path)
        let checkpoint = try? db?.prepare(Schema.checkpointPassive)
        lock.withLock {
            while !stopping {
                _ = lock.wait(untilMonotonic: monotonicNanoseconds() + interval)
                if stopping { break }
                lock.unlock()
                // A failure (busy, a full disk) is left for the next round; the agent's own
                // connection still checkpoints past its bound.
                if let checkpoint {
                    _ = try? checkpoint.step()
                    _ = checkpoint.reset()
                }
                lock.lock()
            }
            stopped = true
            lock.broadcast()
        }
        db?.close()
    }

    /// Stops the thread and waits for it.
    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
            while !stopped { lock.wait() }
        }
    }
}
