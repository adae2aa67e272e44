import CSQLite
import DequeModule
import Foundation
import SpillwayCore
import Synchronization

/// What to do when the buffer is full.
public enum WhenFull: String, Sendable {
    case dropOldest = "drop_oldest"
    case dropNewest = "drop_newest"
}

/// `[buffer]` settings.
public struct SpoolOptions: Sendable, Equatable {
    public var maxBytes: Int64 = 1 << 30
    /// Batches spilled longer ago than this are dropped (nanoseconds); nil keeps them.
    public var maxAge: Int64?
    public var whenFull: WhenFull = .dropOldest
    /// `PRAGMA synchronous`: NORMAL (default) or FULL.
    public var synchronousFull = false
    /// `PRAGMA max_page_count` (4 KiB pages in a new buffer): a hard cap at which SQLite answers SQLITE_FULL, as a
    /// full disk does. Nil: no cap. (Tests use it to drive the full-disk path.)
    public var maxPageCount: Int?
    /// Bytes an append always leaves free on the buffer's file system (see `DiskRoom`).
    public var headroom: Int64 = 8 << 16
    /// Size of `data_dir/reserve`, released when the file system fills anyway (see `DiskRoom`).
    public var reserveSize: Int64 = 8 << 16

    public init() {}
}

/// The spill buffer: encoded batches in SQLite (`data_dir/buffer.sqlite`, WAL), one transaction per
/// batch, oldest first. Rows are deleted only when the caller says Redis acknowledged them. Bounded by
/// `max_bytes` (and `max_age`): when full, drops per policy and counts every dropped record per key.
public final class Spool: @unchecked Sendable {
    // Both writer stages use one spool (one SQLite connection): every public method holds `lock`.
    private let lock = ConditionLock()
    func locked<T>(_ body: () throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        try lock.withLock(body)
    }
    public let path: String
    public let options: SpoolOptions
    let db: SQLiteDatabase
    var insertBatch, insertBatchKey, oldest, oldestForDrop, deleteBatch, deleteBatchKeys, keysOfBatch, addDropped, putState, putOffset,
        batchSize: Statement
    /// The rows' ids, ascending, and the acknowledged ones whose deletion is deferred; under a lock
    /// of their own, so the send stage reads them while the encode stage appends.
    let rows = Mutex(RowIndex())
    /// How many of `rows.acknowledged` (from the front) the open transaction deleted.
    var acknowledgementsDeleted = 0
    /// The last appended batch's serialized form; its storage is reused by the next append.
    var scratch: [UInt8] = []
    /// Cached totals (kept in step with every change).
    var _totals: BacklogTotals
    public var totals: BacklogTotals { (try? locked { _totals }) ?? _totals }
    /// Set when the file found at start could not be used and was moved aside (its new name).
    public private(set) var movedAside: String?
    /// Free space: the headroom appends keep, and the reserve released when the disk fills anyway.
    let disk: DiskRoom
    private let pageSize: Int64
    private let pageCount, freelistCount: Statement
    /// Whether `data_dir/reserve` is allocated (false once a full file system made the buffer
    /// release it, until there is room again). Read without the lock (the send stage looks often).
    public var reserveHeld: Bool { disk.reserveHeld }

    /// Whether no batch waits (acknowledged ones not deleted yet do not count). Never waits for an
    /// append in progress.
    public var isEmpty: Bool { rows.withLock { $0.oldest == nil } }
    /// The id the last successful append gave its batch.
    public internal(set) var lastAppendedID: Int64 = 0

    /// Rows of `requeued`: records waiting for new stream IDs (see `requeue`). Changed under the
    /// lock; read without it, so the encode stage looks at every turn without waiting for the send
    /// stage's transactions.
    let requeuedRows = Atomic<Int>(0)

    /// Opens (or creates) the buffer. A file that is not a usable database is moved aside as
    /// `buffer.sqlite.corrupt-<unix seconds>` (with its -wal and -shm) and a new one is created.
    public init(directory: String, options: SpoolOptions = SpoolOptions()) throws(SQLiteError) {
        path = directory + "/buffer.sqlite"
        self.options = options
        var moved: String?
        var database: SQLiteDatabase
        do {
            database = try Self.open(path, options: options)
        } catch {
            // Only a file SQLite says is not a database, or damaged (quick_check), is moved aside:
            // busy, locked, permissions and the like are errors to report, never "corrupt".
            guard error.isCorrupt, FileManager.default.fileExists(atPath: path) else { throw error }
            let aside = "\(path).corrupt-\(Int(Date().timeIntervalSince1970))"
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
                try? FileManager.default.moveItem(atPath: path + suffix, toPath: aside + suffix)
            }
            moved = aside
            database = try Self.open(path, options: options)
        }
        db = database
        movedAside = moved
        disk = DiskRoom(directory: directory, headroom: options.headroom, reserveSize: options.reserveSize)
        pageSize = try Self.pageSize(of: db)
        pageCount = try db.prepare(Schema.pageCount)
        freelistCount = try db.prepare(Schema.freelistCount)
        insertBatch = try db.prepare(Schema.insertBatch)
        insertBatchKey = try db.prepare(Schema.insertBatchKey)
        oldest = try db.prepare(Schema.oldestBatches)
        oldestForDrop = try db.prepare(Schema.oldestBatchForDrop)
        deleteBatch = try db.prepare(Schema.deleteBatch)
        deleteBatchKeys = try db.prepare(Schema.deleteBatchKeys)
        keysOfBatch = try db.prepare(Schema.keysOfBatch)
        addDropped = try db.prepare(Schema.addDropped)
        putState = try db.prepare(Schema.putState)
        putOffset = try db.prepare(Schema.putOffset)
        batchSize = try db.prepare(Schema.batchSize)
        _totals = try Self.readTotals(db)
        let ids = try Self.readIDs(db)
        rows.withLock { $0.ids = ids }
        requeuedRows.store(Int((try? Self.requeuedTotals(db).rows) ?? 0), ordering: .relaxed)
        checkpointer = Checkpointer(path: path, interval: Self.checkpointInterval)
        disk.ensureReserve(free: freeAfterCheckpoint())
    }

    private func pragma(_ s: Statement) -> Int64 {
        defer { s.reset() }
        return ((try? s.step()) ?? false) ? s.int64(0) : 0
    }

    /// Bytes free on the buffer's file system once the database file holds what the WAL holds now
    /// (a checkpoint grows it); nil when unknown.
    func freeAfterCheckpoint() -> Int64? {
        guard let available = disk.available() else { return nil }
        let logical = pragma(pageCount) * pageSize
        return available - max(0, logical - DiskRoom.fileSize(path))
    }

    /// Whether storing `bytes` leaves the headroom free. When it looks tight, the WAL is folded into
    /// the database and its file given back (a TRUNCATE checkpoint), and the room measured again.
    func roomFor(_ bytes: Int64) -> Bool {
        if estimateRoom(bytes) { return true }
        _ = try? db.exec(Schema.checkpointTruncate)
        return estimateRoom(bytes)
    }

    /// Storing `bytes` writes its pages to the WAL, and then into the database file, which grows by
    /// those that free pages cannot take: after both, at least the headroom must be free.
    private func estimateRoom(_ bytes: Int64) -> Bool {
        guard let free = freeAfterCheckpoint() else { return true }
        // Overflow pages carry 4 bytes of link each; plus the rows' own pages (batches, batch_keys,
        // tail_offsets, and the freelist's): 192 KiB, at least 3 pages.
        let pages = (bytes + pageSize - 5) / (pageSize - 4) + max(3, (192 << 10) / pageSize)
        let growth = max(0, pages - pragma(freelistCount))
        return free - (pages + growth) * pageSize >= disk.headroom
    }

    deinit { checkpointer?.stop() }

    /// The WAL is checkpointed this often, off the appending thread.
    static let checkpointInterval: Int64 = 200_000_000
    /// Past this much WAL the appending connection checkpoints itself.
    static let walBoundBytes: Int64 = 256 << 20
    private var checkpointer: Checkpointer?

    static func readIDs(_ db: SQLiteDatabase) throws(SQLiteError) -> Deque<Int64> {
        let s = try db.prepare(Schema.allBatchIDs)
        var ids: Deque<Int64> = []
        while try s.step() { ids.append(s.int64(0)) }
        return ids
    }

    /// Runs `body` in one transaction (`transactionOnce`). When the file system is full, the WAL is
    /// folded into the database and its file truncated, and `body` tried again; then, still full,
    /// the reserve is released (unless `useReserve` is false: appends never take it) and `body`
    /// tried once more: deletes, state saves and reads always find room.
    func transaction<T>(useReserve: Bool = true, _ body: () throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        do {
            return try transactionOnce(body)
        } catch {
            guard error.isFull else { throw error }
            // First the WAL's own room: folded into the database, its file given back.
            _ = try? db.exec(Schema.checkpointTruncate)
            do {
                return try transactionOnce(body)
            } catch {
                guard useReserve, error.isFull, disk.releaseReserve() else { throw error }
                _ = try? db.exec(Schema.checkpointTruncate)
                return try transactionOnce(body)
            }
        }
    }

    /// Runs `body` in one IMMEDIATE transaction; on any error rolls back, re-reads the totals (the
    /// cache may have moved ahead of the rolled-back rows) and rethrows.
    private func transactionOnce<T>(_ body: () throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        try db.exec(Schema.beginImmediate)
        acknowledgementsDeleted = 0
        do {
            let result = try body()
            try db.exec(Schema.commit)
            // Only now are the deletions of delivered batches durable: unmark them.
            if acknowledgementsDeleted > 0 { rows.withLock { $0.acknowledged.removeFirst(acknowledgementsDeleted) } }
            acknowledgementsDeleted = 0
            return result
        } catch {
            try? db.exec(Schema.rollback)
            _totals = (try? Self.readTotals(db)) ?? _totals
            if let ids = try? Self.readIDs(db) { rows.withLock { $0.ids = ids } }
            if let t = try? Self.requeuedTotals(db) { requeuedRows.store(Int(t.rows), ordering: .relaxed) }
            // Rolled back: the delivered batches are still there, and still marked.
            acknowledgementsDeleted = 0
            throw error
        }
    }

    static func readTotals(_ db: SQLiteDatabase) throws(SQLiteError) -> BacklogTotals {
        // A version 1 file (read by `status` before the agent migrated it) has no lines column.
        let hasLines = try db.prepare(Schema.hasLinesColumn)
        let s = try db.prepare(try hasLines.step() ? Schema.totals : Schema.totalsVersion1)
        _ = try s.step()
        return BacklogTotals(batches: s.int64(0), records: s.int64(1), bytes: s.int64(2),
                             oldestSpilledNs: s.isNull(3) ? nil : s.int64(3), newestSpilledNs: s.isNull(4) ? nil : s.int64(4),
                             lines: s.columnCount > 5 ? s.int64(5) : 0)
    }
}
