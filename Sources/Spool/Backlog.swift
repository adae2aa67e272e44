import DequeModule
import SpillwayBatch
import SpillwayCore
import Synchronization

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
    /// Rows on the wire now (sent, their replies not read): never dropped to make room, since Redis
    /// may be taking them (they would be counted as dropped and delivered both).
    var sending: Set<Int64> = []

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

// The backlog: appending batches (and the drop policy that makes room), reading the oldest, acknowledging
// and replacing them, the records Redis refused moved out of their batch, and the per-key drop and
// rejection counts.
extension Spool {
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
        let counts = batch.keyCounts
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
        // The oldest row without lines that is not on the wire (at most a few are).
        let sending = rows.withLock { $0.sending }
        oldestForDrop.reset()
        oldestForDrop.bind(1, Int64(sending.count + 1))
        var candidate: (Int64, Int64, Int64)?
        while try oldestForDrop.step() {
            let id = oldestForDrop.int64(0)
            if !sending.contains(id) {
                candidate = (id, oldestForDrop.int64(1), oldestForDrop.int64(2))
                break
            }
        }
        oldestForDrop.reset()
        guard let (id, records, bytes) = candidate else { return -1 }
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
        let sending = rows.withLock { $0.sending }
        for (id, records, bytes) in victims where !sending.contains(id) {
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
        let s = try db.prepare(Schema.batchForReplace)
        s.bind(1, id)
        guard try s.step() else { return }
        let oldRecords = s.int64(0), oldBytes = s.int64(1)
        let payload = batch.serialized()
        try transaction { () throws(SQLiteError) in
            try applyAcknowledgementsLocked()
            let u = try db.prepare(Schema.replaceBatch)
            u.bind(1, id)
            u.bind(2, blob: payload)
            u.bind(3, Int64(batch.recordCount))
            u.bind(4, Int64(payload.count))
            try u.run()
            deleteBatchKeys.reset()
            deleteBatchKeys.bind(1, id)
            try deleteBatchKeys.run()
            for (key, n) in batch.keyCounts {
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

    /// Row `id` goes on the wire: until `doneSending`, it is not dropped to make room.
    public func markSending(_ id: Int64) {
        _ = rows.withLock { $0.sending.insert(id) }
    }

    /// Row `id`'s replies are read and its fate recorded (acknowledged, replaced or left).
    public func doneSending(_ id: Int64) {
        _ = rows.withLock { $0.sending.remove(id) }
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
    func applyAcknowledgementsLocked() throws(SQLiteError) {
        let ids = rows.withLock { $0.acknowledged }
        guard ids.count > acknowledgementsDeleted else { return }
        for id in ids[acknowledgementsDeleted...] { try removeRow(id) }
        acknowledgementsDeleted = ids.count
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
}
