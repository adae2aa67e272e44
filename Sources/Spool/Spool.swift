import CSQLite
import DequeModule
import Foundation
import RedisSink
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
    /// `PRAGMA max_page_count` (64 KiB pages): a hard cap at which SQLite answers SQLITE_FULL, as a
    /// full disk does. Nil: no cap. (Tests use it to drive the full-disk path.)
    public var maxPageCount: Int?
    /// Bytes an append always leaves free on the buffer's file system (see `DiskRoom`).
    public var headroom: Int64 = 8 << 16
    /// Size of `data_dir/reserve`, released when the file system fills anyway (see `DiskRoom`).
    public var reserveSize: Int64 = 8 << 16

    public init() {}
}

/// What an append did.
public struct AppendOutcome: Sendable, Equatable {
    /// Whether the batch is now in the buffer.
    public var stored: Bool
    /// Its row id when stored (ids only grow).
    public var id: Int64? = nil
    /// Records dropped to make room or for age (older batches), or this batch's when it was not stored.
    public var droppedRecords: Int64
    /// The disk or the database was full.
    public var diskFull: Bool
    /// The batch holds tailed lines and there was no room for it even after dropping every batch
    /// without lines: it was not stored and not counted as dropped. The caller keeps it and tries
    /// again (the tailers wait meanwhile).
    public var noRoom = false
}

/// The buffer's row ids, ascending, and those acknowledged but not deleted yet (the oldest rows).
struct RowIndex {
    var ids: Deque<Int64> = []
    var acknowledged: [Int64] = []

    /// The oldest row not acknowledged.
    var oldest: Int64? {
        for id in ids where !acknowledged.contains(id) { return id }
        return nil
    }

    /// The newest row not acknowledged.
    var newest: Int64? { ids.last { !acknowledged.contains($0) } }

    mutating func remove(_ id: Int64) {
        if ids.first == id {
            ids.removeFirst()
        } else if let i = ids.firstIndex(of: id) {
            ids.remove(at: i)
        }
    }
}

/// The backlog as the database holds it.
public struct BacklogTotals: Sendable, Equatable {
    public var batches: Int64
    public var records: Int64
    public var bytes: Int64
    public var oldestSpilledNs: Int64?
    public var newestSpilledNs: Int64?
    /// Tailed lines among the records.
    public var lines: Int64 = 0
}

/// The spill buffer: encoded batches in SQLite (`data_dir/buffer.sqlite`, WAL), one transaction per
/// batch, oldest first. Rows are deleted only when the caller says Redis acknowledged them. Bounded by
/// `max_bytes` (and `max_age`): when full, drops per policy and counts every dropped record per key.
public final class Spool: @unchecked Sendable {
    // Both writer stages use one spool (one SQLite connection): every public method holds `lock`.
    private let lock = ConditionLock()
    private func locked<T>(_ body: () throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        try lock.withLock(body)
    }
    public let path: String
    public let options: SpoolOptions
    let db: SQLiteDatabase
    private var insertBatch, insertBatchKey, oldest, oldestForDrop, deleteBatch, deleteBatchKeys, keysOfBatch, addDropped, putState, putOffset,
                batchSize: Statement
    /// The rows' ids, ascending, and the acknowledged ones whose deletion is deferred; under a lock
    /// of their own, so the send stage reads them while the encode stage appends.
    private let rows = Mutex(RowIndex())
    /// How many of `rows.acknowledged` (from the front) the open transaction deleted.
    private var acknowledgementsDeleted = 0
    /// The last appended batch's serialized form; its storage is reused by the next append.
    private var scratch: [UInt8] = []
    /// Cached totals (kept in step with every change).
    private var _totals: BacklogTotals
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
    public private(set) var lastAppendedID: Int64 = 0

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
        let ps = try db.prepare("PRAGMA page_size")
        _ = try ps.step()
        pageSize = max(512, ps.int64(0))
        pageCount = try db.prepare("PRAGMA page_count")
        freelistCount = try db.prepare("PRAGMA freelist_count")
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
    private func freeAfterCheckpoint() -> Int64? {
        guard let available = disk.available() else { return nil }
        let logical = pragma(pageCount) * pageSize
        return available - max(0, logical - DiskRoom.fileSize(path))
    }

    /// Whether storing `bytes` leaves the headroom free. When it looks tight, the WAL is folded into
    /// the database and its file given back (a TRUNCATE checkpoint), and the room measured again.
    private func roomFor(_ bytes: Int64) -> Bool {
        if estimateRoom(bytes) { return true }
        _ = try? db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
        return estimateRoom(bytes)
    }

    /// Storing `bytes` writes its pages to the WAL, and then into the database file, which grows by
    /// those that free pages cannot take: after both, at least the headroom must be free.
    private func estimateRoom(_ bytes: Int64) -> Bool {
        guard let free = freeAfterCheckpoint() else { return true }
        // Overflow pages carry 4 bytes of link each; plus the rows' own pages (batches, batch_keys,
        // tail_offsets).
        let pages = (bytes + pageSize - 5) / (pageSize - 4) + 3
        let growth = max(0, pages - pragma(freelistCount))
        return free - (pages + growth) * pageSize >= disk.headroom
    }

    deinit { checkpointer?.stop() }

    /// The WAL is checkpointed this often, off the appending thread.
    static let checkpointInterval: Int64 = 200_000_000
    /// Past this many WAL pages (64 KiB) the appending connection checkpoints itself.
    static let walBoundPages = 4096
    private var checkpointer: Checkpointer?

    static func readIDs(_ db: SQLiteDatabase) throws(SQLiteError) -> Deque<Int64> {
        let s = try db.prepare("SELECT id FROM batches ORDER BY id")
        var ids: Deque<Int64> = []
        while try s.step() { ids.append(s.int64(0)) }
        return ids
    }

    /// Runs `body` in one transaction (`transactionOnce`). When the file system is full, the WAL is
    /// folded into the database and its file truncated, and `body` tried again; then, still full,
    /// the reserve is released (unless `useReserve` is false: appends never take it) and `body`
    /// tried once more: deletes, state saves and reads always find room.
    private func transaction<T>(useReserve: Bool = true, _ body: () throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        do {
            return try transactionOnce(body)
        } catch {
            guard error.isFull else { throw error }
            // First the WAL's own room: folded into the database, its file given back.
            _ = try? db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
            do {
                return try transactionOnce(body)
            } catch {
                guard useReserve, error.isFull, disk.releaseReserve() else { throw error }
                _ = try? db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
                return try transactionOnce(body)
            }
        }
    }

    /// Runs `body` in one IMMEDIATE transaction; on any error rolls back, re-reads the totals (the
    /// cache may have moved ahead of the rolled-back rows) and rethrows.
    private func transactionOnce<T>(_ body: () throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        try db.exec("BEGIN IMMEDIATE")
        acknowledgementsDeleted = 0
        do {
            let result = try body()
            try db.exec("COMMIT")
            // Only now are the deletions of delivered batches durable: unmark them.
            if acknowledgementsDeleted > 0 { rows.withLock { $0.acknowledged.removeFirst(acknowledgementsDeleted) } }
            acknowledgementsDeleted = 0
            return result
        } catch {
            try? db.exec("ROLLBACK")
            _totals = (try? Self.readTotals(db)) ?? _totals
            if let ids = try? Self.readIDs(db) { rows.withLock { $0.ids = ids } }
            if let t = try? Self.requeuedTotals(db) { requeuedRows.store(Int(t.rows), ordering: .relaxed) }
            // Rolled back: the delivered batches are still there, and still marked.
            acknowledgementsDeleted = 0
            throw error
        }
    }

    static func open(_ path: String, options: SpoolOptions) throws(SQLiteError) -> SQLiteDatabase {
        // Created 0600 before SQLite sees it; SQLite gives -wal and -shm the same mode.
        if !FileManager.default.fileExists(atPath: path) {
            let fd = path.withCString { Glibc.open($0, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600) }
            if fd >= 0 { Glibc.close(fd) }
        }
        let db = try SQLiteDatabase(path: path)
        // Batches are blobs of hundreds of KB: large pages mean fewer overflow pages. Only takes
        // effect on a new file (before WAL is on).
        try db.exec("PRAGMA page_size=65536")
        try db.exec("PRAGMA journal_mode=WAL")
        try db.exec("PRAGMA synchronous=\(options.synchronousFull ? "FULL" : "NORMAL")")
        // Debian builds SQLite with secure_delete on: every page a delete frees would be written
        // again, as zeros, through the WAL (as many bytes as the batch deleted). FAST zeroes only
        // within pages written anyway: deletes stay a few pages, even on a nearly full disk.
        try db.exec("PRAGMA secure_delete=FAST")
        // Checkpoints are the `Checkpointer`'s; this one runs only past 256 MB of WAL (a bound).
        try db.exec("PRAGMA wal_autocheckpoint=\(Self.walBoundPages)")
        if let pages = options.maxPageCount { try db.exec("PRAGMA max_page_count=\(pages)") }
        let check = try db.prepare("PRAGMA quick_check")
        guard try check.step(), check.string(0) == "ok" else {
            throw SQLiteError(code: SQLITE_CORRUPT, message: "\(path): quick_check failed")
        }
        try db.exec(Schema.create)
        let hasLines = try db.prepare(Schema.hasLinesColumn)
        if try !hasLines.step() {
            try db.exec(Schema.addLinesColumn)
        }
        try db.exec(Schema.setVersion)
        return db
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

    /// Records per key of a batch (stream keys; a timeseries batch counts under its first series key).
    static func keyCounts(_ batch: EncodedBatch) -> [KeyBytes: Int64] {
        var counts: [KeyBytes: Int64] = [:]
        // Records of a batch come in runs of one key: count a run, then hash its key once.
        var run: [UInt8] = []
        var runLength: Int64 = 0
        for i in 0..<batch.commandCount {
            switch batch.role(i) {
            case .record:
                let key = batch.key(i)
                if runLength > 0, key.elementsEqual(run) {
                    runLength += 1
                } else {
                    if runLength > 0 { counts[KeyBytes(run), default: 0] += runLength }
                    run = Array(key)
                    runLength = 1
                }
            case .samples(let owners):
                counts[KeyBytes(Array(batch.argument(i, 1))), default: 0] += Int64(Set(owners).count)
            case .setup: break
            }
        }
        if runLength > 0 { counts[KeyBytes(run), default: 0] += runLength }
        return counts
    }

    /// Stores a batch in one transaction, making room per policy first. Never throws for a full disk:
    /// that is reported in the outcome (and the batch's records counted as dropped when not stored).
    /// `consuming`: rows of `requeued` whose records the batch carries (with new IDs), deleted in
    /// the same transaction when it is stored.
    public func append(_ batch: EncodedBatch, now: Int64, consuming: [Int64] = []) throws(SQLiteError) -> AppendOutcome {
        try locked { () throws(SQLiteError) -> AppendOutcome in try appendLocked(batch, now: now, consuming: consuming) }
    }

    private func appendLocked(_ batch: EncodedBatch, now: Int64, consuming: [Int64]) throws(SQLiteError) -> AppendOutcome {
        let payload = scratch[0..<batch.serialize(into: &scratch)]
        let bytes = Int64(payload.count)
        let counts = Self.keyCounts(batch)
        // A batch with tailed lines is never dropped: room is made by dropping batches without lines,
        // and when none is left the caller waits (the lines are still in their files).
        let pinned = batch.lineCount > 0
        var dropped: Int64 = 0
        func store() throws(SQLiteError) {
            try insert(payload, records: Int64(batch.recordCount), lines: Int64(batch.lineCount), bytes: bytes, counts: counts, now: now)
            try saveOffsetsLocked(batch.checkpoints, now: now)
            if !consuming.isEmpty {
                let d = try db.prepare(Schema.deleteRequeued)
                for id in consuming {
                    d.reset()
                    d.bind(1, id)
                    try d.run()
                }
                requeuedRows.subtract(consuming.count, ordering: .relaxed)
            }
        }
        // The reserve comes back once there is room for it again.
        if !disk.reserveHeld { disk.ensureReserve(free: freeAfterCheckpoint()) }
        // The file system's room is measured first: an append never takes the headroom, so deletes,
        // checkpoints and state saves always can run (see `DiskRoom`).
        if roomFor(bytes) {
            do {
                return try transaction(useReserve: false) { () throws(SQLiteError) -> AppendOutcome in
                    try applyAcknowledgementsLocked()
                    if let maxAge = options.maxAge { dropped += try dropOlderThan(now - maxAge) }
                    if _totals.bytes + bytes > options.maxBytes {
                        if !pinned, options.whenFull == .dropNewest || bytes > options.maxBytes {
                            try recordDropped(counts)
                            return AppendOutcome(stored: false, droppedRecords: dropped + Int64(batch.recordCount), diskFull: false)
                        }
                        while _totals.bytes + bytes > options.maxBytes {
                            let n = try dropOldestBatch()
                            if n < 0 { break }
                            dropped += n
                        }
                        // Only batches with lines are left. A pinned batch is stored when the buffer is
                        // empty (so one larger than max_bytes cannot wait forever).
                        if _totals.bytes + bytes > options.maxBytes, !(pinned && _totals.batches == 0) {
                            if pinned { return AppendOutcome(stored: false, droppedRecords: dropped, diskFull: false, noRoom: true) }
                            try recordDropped(counts)
                            return AppendOutcome(stored: false, droppedRecords: dropped + Int64(batch.recordCount), diskFull: false)
                        }
                    }
                    try store()
                    return AppendOutcome(stored: true, id: lastAppendedID, droppedRecords: dropped, diskFull: false)
                }
            } catch {
                guard error.isFull else { throw error }
            }
        }
        // The file system is full (or would be within the headroom). Deleting frees pages even
        // then (the reserve sees to it): delivered batches first.
        try? transaction { () throws(SQLiteError) in try applyAcknowledgementsLocked() }
        // Then drop per policy: drop_oldest (and any batch with lines) frees the oldest batches
        // without lines, one at a time (each drop committed), until the new one fits or nothing is
        // left to drop.
        var freed: Int64 = 0
        while true {
            // (max_bytes still holds here: a pinned batch past it goes in only into an empty buffer.)
            let underCap = _totals.bytes + bytes <= options.maxBytes || (pinned && _totals.batches == 0)
            if underCap, roomFor(bytes) {
                do {
                    try transaction(useReserve: false) { () throws(SQLiteError) in try store() }
                    return AppendOutcome(stored: true, id: lastAppendedID, droppedRecords: freed, diskFull: freed > 0)
                } catch {
                    guard error.isFull else { throw error }
                }
            }
            guard options.whenFull == .dropOldest || pinned,
                  let n = try? transaction({ () throws(SQLiteError) -> Int64 in try dropOldestBatch() }), n >= 0 else { break }
            freed += n
        }
        if pinned { return AppendOutcome(stored: false, droppedRecords: freed, diskFull: true, noRoom: true) }
        try? recordDropped(counts)
        return AppendOutcome(stored: false, droppedRecords: freed + Int64(batch.recordCount), diskFull: true)
    }

    private func insert(_ payload: ArraySlice<UInt8>, records: Int64, lines: Int64, bytes: Int64, counts: [KeyBytes: Int64], now: Int64) throws(SQLiteError) {
        insertBatch.reset()
        insertBatch.bind(1, now)
        insertBatch.bind(2, records)
        insertBatch.bind(3, bytes)
        insertBatch.bind(5, lines)
        try insertBatch.run(binding: payload, at: 4)
        let id = db.lastInsertRowID
        lastAppendedID = id
        rows.withLock { $0.ids.append(id) }
        for (key, n) in counts {
            insertBatchKey.reset()
            insertBatchKey.bind(1, id)
            insertBatchKey.bind(2, blob: key.bytes)
            insertBatchKey.bind(3, n)
            try insertBatchKey.run()
        }
        _totals.batches += 1
        _totals.records += records
        _totals.lines += lines
        _totals.bytes += bytes
        if _totals.oldestSpilledNs == nil { _totals.oldestSpilledNs = now }
        _totals.newestSpilledNs = now
    }

    /// Drops the oldest batch without tailed lines (inside a transaction), counting its records per
    /// key. Returns them, or -1 when there is no such batch.
    private func dropOldestBatch() throws(SQLiteError) -> Int64 {
        oldestForDrop.reset()
        guard try oldestForDrop.step() else { return -1 }
        let id = oldestForDrop.int64(0), records = oldestForDrop.int64(1), bytes = oldestForDrop.int64(2)
        oldestForDrop.reset()
        if rows.withLock({ $0.acknowledged.contains(id) }) {
            // Delivered, its deletion deferred: freed, not dropped.
            try removeBatch(id, records: records, lines: 0, bytes: bytes, countAsDropped: false)
            return 0
        }
        try removeBatch(id, records: records, lines: 0, bytes: bytes, countAsDropped: true)
        return records
    }

    private func dropOlderThan(_ cutoff: Int64) throws(SQLiteError) -> Int64 {
        let s = try db.prepare(Schema.batchesOlderThan)
        s.bind(1, cutoff)
        var victims: [(Int64, Int64, Int64)] = []
        while try s.step() { victims.append((s.int64(0), s.int64(1), s.int64(2))) }
        var dropped: Int64 = 0
        for (id, records, bytes) in victims {
            try removeBatch(id, records: records, lines: 0, bytes: bytes, countAsDropped: true)
            dropped += records
        }
        return dropped
    }

    private func removeBatch(_ id: Int64, records: Int64, lines: Int64, bytes: Int64, countAsDropped: Bool) throws(SQLiteError) {
        if countAsDropped {
            keysOfBatch.reset()
            keysOfBatch.bind(1, id)
            var counts: [KeyBytes: Int64] = [:]
            while try keysOfBatch.step() { counts[KeyBytes(keysOfBatch.blob(0))] = keysOfBatch.int64(1) }
            keysOfBatch.reset()
            try recordDropped(counts)
        }
        deleteBatchKeys.reset()
        deleteBatchKeys.bind(1, id)
        try deleteBatchKeys.run()
        deleteBatch.reset()
        deleteBatch.bind(1, id)
        try deleteBatch.run()
        rows.withLock { $0.remove(id) }
        _totals.batches -= 1
        _totals.records -= records
        _totals.lines -= lines
        _totals.bytes -= bytes
        if _totals.batches == 0 {
            _totals.oldestSpilledNs = nil
            _totals.newestSpilledNs = nil
        }
    }

    private func recordDropped(_ counts: [KeyBytes: Int64]) throws(SQLiteError) {
        for (key, n) in counts {
            addDropped.reset()
            addDropped.bind(1, blob: key.bytes)
            addDropped.bind(2, n)
            try addDropped.run()
        }
    }

    /// The oldest `limit` batches, oldest first, with their row ids. A row whose payload cannot be
    /// decoded is reported in `unreadable` (the caller decides; it is never silently deleted).
    /// Only rows with `after` < id <= `upTo` (rows newer than `upTo` are still on their way through
    /// memory; rows up to `after` are on the wire). With `records`, rows past the one that brings
    /// their records to that many are not read.
    public func oldestBatches(limit: Int, after: Int64 = 0, upTo: Int64 = .max, records: Int64? = nil) throws(SQLiteError) -> (batches: [(id: Int64, batch: EncodedBatch)], unreadable: [Unreadable]) {
        try locked { () throws(SQLiteError) -> ([(id: Int64, batch: EncodedBatch)], [Unreadable]) in
            try oldestLocked(limit: limit, after: after, upTo: upTo, records: records)
        }
    }

    /// A row whose payload cannot be decoded, and why.
    public struct Unreadable: Sendable, Equatable {
        public var id: Int64
        public var reason: String
    }

    private func oldestLocked(limit: Int, after: Int64, upTo: Int64, records: Int64?) throws(SQLiteError) -> (batches: [(id: Int64, batch: EncodedBatch)], unreadable: [Unreadable]) {
        if hasAcknowledgements { try transaction { () throws(SQLiteError) in try applyAcknowledgementsLocked() } }
        oldest.reset()
        oldest.bind(1, Int64(limit))
        oldest.bind(2, upTo)
        oldest.bind(3, after)
        var out: [(Int64, EncodedBatch)] = []
        var bad: [Unreadable] = []
        var read: Int64 = 0
        while try oldest.step() {
            let id = oldest.int64(0)
            do {
                out.append((id, try EncodedBatch(serialized: oldest.blob(1))))
            } catch {
                bad.append(Unreadable(id: id, reason: error.description))
            }
            read += oldest.int64(2)
            if let records, read >= records { break }
        }
        oldest.reset()
        return (out, bad)
    }

    /// Moves rows that cannot be decoded out of the backlog into `unreadable_batches` (payload and
    /// reason kept; one transaction), so that replay goes on past them. Their records no longer
    /// count in `totals`; `SpoolStatus.unreadable` counts them.
    public func setAside(_ bad: [Unreadable], now: Int64) throws(SQLiteError) {
        guard !bad.isEmpty else { return }
        try locked { () throws(SQLiteError) in
            try transaction { () throws(SQLiteError) in
                let move = try db.prepare(Schema.setAside)
                for row in bad {
                    move.reset()
                    move.bind(1, row.id)
                    move.bind(2, row.reason)
                    move.bind(3, now)
                    try move.run()
                    try removeRow(row.id)
                }
            }
        }
    }

    /// Deletes a batch Redis acknowledged (in its own transaction).
    public func acknowledge(id: Int64, records: Int64) throws(SQLiteError) {
        try locked { () throws(SQLiteError) in try acknowledgeLocked(id: id, records: records) }
    }

    /// The id of the newest batch, or nil when the buffer is empty.
    public func newestID() throws(SQLiteError) -> Int64? {
        rows.withLock { $0.newest }
    }

    /// The id of the oldest batch, or nil when the buffer is empty.
    public func oldestID() throws(SQLiteError) -> Int64? {
        rows.withLock { $0.oldest }
    }

    /// The ids of the `n` oldest batches (fewer when fewer wait), oldest first; acknowledged ones
    /// do not count.
    public func oldestIDs(_ n: Int) -> [Int64] {
        rows.withLock { rows in
            var out: [Int64] = []
            for id in rows.ids where !rows.acknowledged.contains(id) {
                if out.count == n { break }
                out.append(id)
            }
            return out
        }
    }

    // MARK: refused records moved out of their batch

    /// Rows of `requeued`: records waiting for new stream IDs (see `requeue`). Changed under the
    /// lock; read without it, so the encode stage looks at every turn without waiting for the send
    /// stage's transactions.
    private let requeuedRows = Atomic<Int>(0)
    /// Whether records wait in `requeued` for the encode stage.
    public var hasRequeued: Bool { requeuedRows.load(ordering: .relaxed) > 0 }
    /// The records waiting in `requeued` (part of the backlog, beside `totals`).
    public var requeuedRecords: Int64 {
        (try? locked { () throws(SQLiteError) -> Int64 in try Self.requeuedTotals(db).records }) ?? 0
    }

    /// In one transaction: batch `id` becomes `remainder` (deleted when nothing is left of it), and
    /// `moved` (XADDs Redis refused, surely not written) waits in `requeued` for the encode stage
    /// to give them new IDs. A `kill -9` either side of it loses and doubles nothing.
    public func requeue(id: Int64, remainder: EncodedBatch, moved: EncodedBatch, now: Int64) throws(SQLiteError) {
        try locked { () throws(SQLiteError) in
            // A row dropped meanwhile (max_bytes, max_age: its records counted as dropped) takes its
            // refused records with it, as `replaceLocked` does.
            batchSize.reset()
            batchSize.bind(1, id)
            let exists = try batchSize.step()
            batchSize.reset()
            guard exists else { return }
            if remainder.commandCount == 0 {
                try transaction { () throws(SQLiteError) in
                    try applyAcknowledgementsLocked()
                    try removeRow(id)
                    try insertRequeued(moved, now: now)
                }
            } else {
                try replaceLocked(id: id, with: remainder) { () throws(SQLiteError) in try self.insertRequeued(moved, now: now) }
            }
        }
    }

    static func requeuedTotals(_ db: SQLiteDatabase) throws(SQLiteError) -> (rows: Int64, records: Int64) {
        let s = try db.prepare(Schema.requeuedTotals)
        return try s.step() ? (s.int64(0), s.int64(1)) : (0, 0)
    }

    private func insertRequeued(_ moved: EncodedBatch, now: Int64) throws(SQLiteError) {
        let s = try db.prepare(Schema.insertRequeued)
        s.bind(1, now)
        s.bind(2, Int64(moved.recordCount))
        s.bind(3, blob: moved.serialized())
        try s.run()
        requeuedRows.add(1, ordering: .relaxed)
    }

    /// The records waiting for new IDs, oldest first (at most `limit` rows), with their row ids.
    public func requeued(limit: Int = 64) throws(SQLiteError) -> [(id: Int64, batch: EncodedBatch)] {
        try locked { () throws(SQLiteError) -> [(id: Int64, batch: EncodedBatch)] in
            guard hasRequeued else { return [] }
            let s = try db.prepare(Schema.requeuedRows)
            s.bind(1, Int64(limit))
            var out: [(Int64, EncodedBatch)] = []
            var bad: [(Int64, String)] = []
            while try s.step() {
                do {
                    out.append((s.int64(0), try EncodedBatch(serialized: s.blob(1))))
                } catch {
                    bad.append((s.int64(0), "\(error)"))
                }
            }
            s.reset()
            if !bad.isEmpty {
                // Kept, with the reason, beside the batches that could not be decoded.
                try transaction { () throws(SQLiteError) in
                    let move = try db.prepare(Schema.setAsideRequeued)
                    let delete = try db.prepare(Schema.deleteRequeued)
                    for (id, reason) in bad {
                        move.reset()
                        move.bind(1, id)
                        move.bind(2, "requeued row \(id): \(reason)")
                        move.bind(3, wallClockNanoseconds())
                        try move.run()
                        delete.reset()
                        delete.bind(1, id)
                        try delete.run()
                    }
                    requeuedRows.subtract(bad.count, ordering: .relaxed)
                }
            }
            return out
        }
    }

    /// Replaces a batch with what is left of it (after a partial write), in one transaction.
    public func replace(id: Int64, with batch: EncodedBatch) throws(SQLiteError) {
        try locked { () throws(SQLiteError) in try replaceLocked(id: id, with: batch) }
    }

    private func replaceLocked(id: Int64, with batch: EncodedBatch, also: (() throws(SQLiteError) -> Void)? = nil) throws(SQLiteError) {
        let s = try db.prepare("SELECT records, bytes, spilled_ns FROM batches WHERE id = ?1")
        s.bind(1, id)
        guard try s.step() else { return }
        let oldRecords = s.int64(0), oldBytes = s.int64(1)
        let payload = batch.serialized()
        try transaction { () throws(SQLiteError) in
            try applyAcknowledgementsLocked()
            let u = try db.prepare("UPDATE batches SET payload = ?2, records = ?3, bytes = ?4 WHERE id = ?1")
            u.bind(1, id)
            u.bind(2, blob: payload)
            u.bind(3, Int64(batch.recordCount))
            u.bind(4, Int64(payload.count))
            try u.run()
            deleteBatchKeys.reset()
            deleteBatchKeys.bind(1, id)
            try deleteBatchKeys.run()
            for (key, n) in Self.keyCounts(batch) {
                insertBatchKey.reset()
                insertBatchKey.bind(1, id)
                insertBatchKey.bind(2, blob: key.bytes)
                insertBatchKey.bind(3, n)
                try insertBatchKey.run()
            }
            _totals.records += Int64(batch.recordCount) - oldRecords
            _totals.bytes += Int64(payload.count) - oldBytes
            try also?()
        }
    }

    private func acknowledgeLocked(id: Int64, records: Int64) throws(SQLiteError) {
        try transaction { () throws(SQLiteError) in
            try applyAcknowledgementsLocked()
            try removeRow(id)
        }
    }

    /// Inside a transaction: deletes a batch's row (delivered, or set aside), if it is still there.
    private func removeRow(_ id: Int64) throws(SQLiteError) {
        batchSize.reset()
        batchSize.bind(1, id)
        guard try batchSize.step() else { return }
        let bytes = batchSize.int64(0), stored = batchSize.int64(1), lines = batchSize.int64(2)
        batchSize.reset()
        try removeBatch(id, records: stored, lines: lines, bytes: bytes, countAsDropped: false)
    }

    /// Marks a batch Redis acknowledged; its row is deleted in the next transaction that touches
    /// the buffer (the next append, mostly), or by `flushAcknowledgements`. From now on it no longer
    /// counts as waiting (`oldestID`, `isEmpty`). Cheap: it never waits for an append in progress.
    /// A `kill -9` before the deletion replays the batch (explicit stream IDs make that harmless).
    public func acknowledgeLater(id: Int64) {
        rows.withLock { $0.acknowledged.append(id) }
    }

    public var hasAcknowledgements: Bool { rows.withLock { !$0.acknowledged.isEmpty } }

    /// Deletes the batches acknowledged with `acknowledgeLater`, in one transaction.
    public func flushAcknowledgements() throws(SQLiteError) {
        guard hasAcknowledgements else { return }
        try locked { () throws(SQLiteError) in
            try transaction { () throws(SQLiteError) in try applyAcknowledgementsLocked() }
        }
    }

    /// Inside a transaction: deletes the rows acknowledged so far. They stay marked until the
    /// transaction commits (`transaction` unmarks them then); a rolled back one is tried again later.
    private func applyAcknowledgementsLocked() throws(SQLiteError) {
        let ids = rows.withLock { $0.acknowledged }
        guard ids.count > acknowledgementsDeleted else { return }
        for id in ids[acknowledgementsDeleted...] { try removeRow(id) }
        acknowledgementsDeleted = ids.count
    }

    // MARK: tailed files' offsets

    private func saveOffsetsLocked(_ checkpoints: [FileCheckpoint], now: Int64) throws(SQLiteError) {
        let put = putOffset
        for c in checkpoints {
            put.reset()
            put.bind(1, Int64(bitPattern: c.identity.device))
            put.bind(2, Int64(bitPattern: c.identity.inode))
            put.bind(3, Int64(bitPattern: c.fingerprint))
            put.bind(4, Int64(c.fingerprintLength))
            put.bind(5, c.offset)
            put.bind(6, c.size)
            put.bind(7, c.path)
            put.bind(8, now)
            try put.run()
        }
    }

    /// Every tailed file's committed offset.
    public func offsets() throws(SQLiteError) -> [FileCheckpoint] {
        try locked { () throws(SQLiteError) -> [FileCheckpoint] in try Self.readOffsets(db).map(\.checkpoint) }
    }

    static func readOffsets(_ db: SQLiteDatabase) throws(SQLiteError) -> [TailOffset] {
        let s = try db.prepare(Schema.allOffsets)
        var out: [TailOffset] = []
        while try s.step() {
            out.append(TailOffset(checkpoint: FileCheckpoint(
                identity: FileIdentity(device: UInt64(bitPattern: s.int64(0)), inode: UInt64(bitPattern: s.int64(1))),
                fingerprint: UInt64(bitPattern: s.int64(2)), fingerprintLength: Int(s.int64(3)),
                offset: s.int64(4), size: s.int64(5), path: s.string(6)), updatedNs: s.int64(7)))
        }
        return out
    }

    /// Saves offsets outside any batch (no lines involved: a first start's end-of-file positions,
    /// a file's copy consumed), in one transaction.
    public func saveOffsets(_ checkpoints: [FileCheckpoint], now: Int64) throws(SQLiteError) {
        try locked { () throws(SQLiteError) in
            try transaction { () throws(SQLiteError) in try saveOffsetsLocked(checkpoints, now: now) }
        }
    }

    /// Forgets the offsets of files that no longer exist, in one transaction.
    public func forgetOffsets(_ identities: [FileIdentity]) throws(SQLiteError) {
        guard !identities.isEmpty else { return }
        try locked { () throws(SQLiteError) in
            try transaction { () throws(SQLiteError) in
                let d = try db.prepare(Schema.deleteOffset)
                for i in identities {
                    d.reset()
                    d.bind(1, Int64(bitPattern: i.device))
                    d.bind(2, Int64(bitPattern: i.inode))
                    try d.run()
                }
            }
        }
    }

    /// Whether tail input `id` started before (its files are then not at their first sight).
    public func isTailInputKnown(_ id: String) throws(SQLiteError) -> Bool {
        try locked { () throws(SQLiteError) -> Bool in
            let s = try db.prepare(Schema.tailInputKnown)
            s.bind(1, id)
            return try s.step()
        }
    }

    /// Records tail input `id`'s first start together with the offsets it starts from, in one
    /// transaction (a restart right after must not take the same files for new ones).
    public func registerTailInput(_ id: String, offsets: [FileCheckpoint], now: Int64) throws(SQLiteError) {
        try locked { () throws(SQLiteError) in
            try transaction { () throws(SQLiteError) in
                try saveOffsetsLocked(offsets, now: now)
                let s = try db.prepare(Schema.addTailInput)
                s.bind(1, id)
                s.bind(2, now)
                try s.run()
            }
        }
    }

    /// Records dropped per key, ever (key as text).
    public func droppedPerKey(limit: Int = 1000) throws(SQLiteError) -> [String: Int64] {
        try locked { () throws(SQLiteError) -> [String: Int64] in try droppedLocked(limit: limit) }
    }

    private func droppedLocked(limit: Int) throws(SQLiteError) -> [String: Int64] {
        let s = try db.prepare(Schema.droppedKeys)
        s.bind(1, Int64(limit))
        var out: [String: Int64] = [:]
        while try s.step() { out[String(decoding: s.blob(0), as: UTF8.self)] = s.int64(1) }
        return out
    }

    /// Adds records Redis refused for good, per key (with its last reply), in one transaction.
    public func addRejected(_ rejections: [(key: [UInt8], records: Int64, reply: String)], now: Int64) throws(SQLiteError) {
        guard !rejections.isEmpty else { return }
        try locked { () throws(SQLiteError) in
            try transaction { () throws(SQLiteError) in
                let s = try db.prepare(Schema.addRejected)
                for r in rejections {
                    s.reset()
                    s.bind(1, blob: r.key)
                    s.bind(2, r.records)
                    s.bind(3, String(r.reply.prefix(500)))
                    s.bind(4, now)
                    try s.run()
                }
            }
        }
    }

    /// Saves the agent's state (breaker, counters, …) for `spillway status`: one JSON value under
    /// key `state`, in one transaction that deletes the key/value rows an earlier version saved.
    public func saveState(_ state: AgentState) throws(SQLiteError) {
        let json: String
        do {
            json = try state.json()
        } catch {
            throw SQLiteError(code: SQLITE_MISUSE, message: "cannot encode the agent state: \(error)")
        }
        try locked { () throws(SQLiteError) in try saveStateLocked(json) }
    }

    private func saveStateLocked(_ json: String) throws(SQLiteError) {
        try transaction { () throws(SQLiteError) in
            try applyAcknowledgementsLocked()
            let others = try db.prepare(Schema.deleteOtherState)
            others.bind(1, AgentState.key)
            try others.run()
            putState.reset()
            putState.bind(1, AgentState.key)
            putState.bind(2, json)
            try putState.run()
        }
    }

    /// The agent's state as last saved (this version's or an earlier one's; empty when none was).
    public func readState() throws(SQLiteError) -> AgentState {
        try locked { () throws(SQLiteError) -> AgentState in AgentState(rows: try Self.stateRows(db)) }
    }

    /// Every row of `agent_state`.
    static func stateRows(_ db: SQLiteDatabase) throws(SQLiteError) -> [String: String] {
        let s = try db.prepare(Schema.allState)
        var rows: [String: String] = [:]
        while try s.step() { rows[s.string(0)] = s.string(1) }
        return rows
    }
}

/// What `spillway status` reads: the backlog, the keys with most records, drops, and the agent's
/// saved state. Opened read-only, so it never blocks the running agent (WAL readers do not block the
/// writer).
public struct SpoolStatus: Sendable {
    public var totals: BacklogTotals
    public var topKeys: [(key: String, records: Int64)]
    public var dropped: [(key: String, records: Int64)]
    public var state: AgentState
    /// Tailed files' committed offsets.
    public var offsets: [TailOffset] = []
    /// Batches set aside because they could not be decoded (`unreadable_batches`), and their records.
    public var unreadable: (batches: Int64, records: Int64) = (0, 0)
    /// Records Redis refused for good, per key (most first, at most 1000 keys), ever.
    public var rejected: [RejectedKey] = []

    public struct RejectedKey: Sendable, Equatable {
        public var key: String
        public var records: Int64
        /// Redis's last reply for that key.
        public var reply: String
        public var updatedNs: Int64
    }

    /// Nil when there is no buffer file yet (the agent never ran with this data_dir).
    public static func read(directory: String, topKeys: Int = 20) throws(SQLiteError) -> SpoolStatus? {
        let path = directory + "/buffer.sqlite"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let db = try SQLiteDatabase(path: path, readOnly: true)
        try db.exec("BEGIN")
        defer { try? db.exec("COMMIT") }
        // The agent creates the file before the schema: in that instant there is nothing to read yet.
        func hasTable(_ name: String) throws(SQLiteError) -> Bool {
            let s = try db.prepare(Schema.tableExists)
            s.bind(1, name)
            return try s.step()
        }
        guard try hasTable("agent_state") else { return nil }
        var totals = try Spool.readTotals(db)
        // Records Redis refused, waiting for new IDs, are part of the backlog.
        if try hasTable("requeued") {
            let requeued = try Spool.requeuedTotals(db).records
            totals.records += requeued
            totals.lines += requeued
        }
        func pairs(_ sql: String, _ limit: Int) throws(SQLiteError) -> [(String, Int64)] {
            let s = try db.prepare(sql)
            s.bind(1, Int64(limit))
            var out: [(String, Int64)] = []
            while try s.step() { out.append((String(decoding: s.blob(0), as: UTF8.self), s.int64(1))) }
            return out
        }
        let top = try pairs(Schema.topKeys, topKeys)
        let dropped = try pairs(Schema.droppedKeys, 1000)
        let state = AgentState(rows: try Spool.stateRows(db))
        let offsets = try hasTable("tail_offsets") ? try Spool.readOffsets(db) : []
        var unreadable: (Int64, Int64) = (0, 0)
        if try hasTable("unreadable_batches") {
            let u = try db.prepare(Schema.unreadableTotals)
            if try u.step() { unreadable = (u.int64(0), u.int64(1)) }
        }
        var rejected: [RejectedKey] = []
        if try hasTable("rejected") {
            let r = try db.prepare(Schema.rejectedKeys)
            r.bind(1, 1000)
            while try r.step() {
                rejected.append(RejectedKey(key: String(decoding: r.blob(0), as: UTF8.self), records: r.int64(1), reply: r.string(2), updatedNs: r.int64(3)))
            }
        }
        return SpoolStatus(totals: totals, topKeys: top.map { ($0.0, $0.1) }, dropped: dropped.map { ($0.0, $0.1) }, state: state,
                           offsets: offsets, unreadable: unreadable, rejected: rejected)
    }
}

/// A tailed file's committed offset and when it was committed.
public struct TailOffset: Sendable, Equatable {
    public var checkpoint: FileCheckpoint
    public var updatedNs: Int64
}
