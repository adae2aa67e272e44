import Foundation

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
        try db.exec(Schema.begin)
        defer { try? db.exec(Schema.commit) }
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
