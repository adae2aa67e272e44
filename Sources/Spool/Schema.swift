/// All of the spill buffer's SQL. Migrations are additive: a new version adds tables or columns and
/// never rewrites old ones.
enum Schema {
    static let version = 4

    static let create = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- One row per spilled batch, in production order (id). payload: EncodedBatch.serialized().
        -- lines (version 2; added to version 1 files by addLinesColumn): tailed lines in the batch;
        -- such a row is never dropped.
        CREATE TABLE IF NOT EXISTS batches (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            spilled_ns INTEGER NOT NULL,
            records INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            payload BLOB NOT NULL,
            lines INTEGER NOT NULL DEFAULT 0
        );
        -- Records per key in each batch, for status and per-key drop counts.
        CREATE TABLE IF NOT EXISTS batch_keys (
            batch_id INTEGER NOT NULL,
            key BLOB NOT NULL,
            records INTEGER NOT NULL,
            PRIMARY KEY (batch_id, key)
        ) WITHOUT ROWID;
        -- Records dropped per key (buffer full, too old), ever.
        CREATE TABLE IF NOT EXISTS dropped (key BLOB PRIMARY KEY, records INTEGER NOT NULL) WITHOUT ROWID;
        -- The running agent's state for `spillway status`: breaker, counters, last error.
        CREATE TABLE IF NOT EXISTS agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- Version 2: each tailed file's offset, per identity (device, inode; the fingerprint of its
        -- first bytes tells inode reuse apart), committed in the transaction that stores the batch
        -- holding its lines.
        CREATE TABLE IF NOT EXISTS tail_offsets (
            device INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            fingerprint INTEGER NOT NULL,
            fp_len INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            size INTEGER NOT NULL,
            path TEXT NOT NULL,
            updated_ns INTEGER NOT NULL,
            PRIMARY KEY (device, inode)
        ) WITHOUT ROWID;
        -- Version 2: tail inputs that have started once (files present at an input's first start are
        -- read from their end unless from_beginning).
        CREATE TABLE IF NOT EXISTS tail_inputs (id TEXT PRIMARY KEY, started_ns INTEGER NOT NULL) WITHOUT ROWID;
        -- Version 3: batches the agent could not decode (damaged, or in a format this version does not
        -- know), moved out of the backlog so replay goes on past them. Kept, never deleted by the agent.
        CREATE TABLE IF NOT EXISTS unreadable_batches (
            id INTEGER PRIMARY KEY,
            spilled_ns INTEGER NOT NULL,
            records INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            payload BLOB NOT NULL,
            lines INTEGER NOT NULL,
            reason TEXT NOT NULL,
            set_aside_ns INTEGER NOT NULL
        );
        -- Version 4: records Redis refused for good (WRONGTYPE, a sample that is not a number, …),
        -- per key, ever, with Redis's last reply; for status.
        CREATE TABLE IF NOT EXISTS rejected (
            key BLOB PRIMARY KEY,
            records INTEGER NOT NULL,
            reply TEXT NOT NULL,
            updated_ns INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- Version 4: XADDs Redis refused (surely not written), moved out of their batch in the
        -- transaction that updates it, until the encode stage gives them new IDs in a batch of its
        -- own (that batch's append deletes them, in one transaction).
        CREATE TABLE IF NOT EXISTS requeued (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_ns INTEGER NOT NULL,
            records INTEGER NOT NULL,
            payload BLOB NOT NULL
        );
        INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
        """

    /// Version 2's column on a version 1 file.
    static let hasLinesColumn = "SELECT 1 FROM pragma_table_info('batches') WHERE name = 'lines'"
    static let addLinesColumn = "ALTER TABLE batches ADD COLUMN lines INTEGER NOT NULL DEFAULT 0"
    static let setVersion = "UPDATE meta SET value = '\(version)' WHERE key = 'schema_version'"

    static let insertBatch = "INSERT INTO batches (spilled_ns, records, bytes, payload, lines) VALUES (?1, ?2, ?3, ?4, ?5)"
    static let insertBatchKey = "INSERT INTO batch_keys (batch_id, key, records) VALUES (?1, ?2, ?3)"
    static let oldestBatches = "SELECT id, payload, records FROM batches WHERE id > ?3 AND id <= ?2 ORDER BY id LIMIT ?1"
    // Rows holding tailed lines are never dropped: those lines could not be read again.
    /// The ?1 oldest batches without lines (the oldest not on the wire is dropped).
    static let oldestBatchForDrop = "SELECT id, records, bytes FROM batches WHERE lines = 0 ORDER BY id LIMIT ?1"
    static let batchesOlderThan = "SELECT id, records, bytes FROM batches WHERE spilled_ns < ?1 AND lines = 0 ORDER BY id"
    static let setAside = """
        INSERT INTO unreadable_batches (id, spilled_ns, records, bytes, payload, lines, reason, set_aside_ns)
        SELECT id, spilled_ns, records, bytes, payload, lines, ?2, ?3 FROM batches WHERE id = ?1
        """
    static let unreadableTotals = "SELECT COUNT(*), COALESCE(SUM(records), 0) FROM unreadable_batches"
    static let deleteBatch = "DELETE FROM batches WHERE id = ?1"
    static let batchSize = "SELECT bytes, records, lines FROM batches WHERE id = ?1"
    static let allBatchIDs = "SELECT id FROM batches ORDER BY id"
    /// A batch's size before `replaceBatch` gives it what is left of it.
    static let batchForReplace = "SELECT records, bytes, spilled_ns FROM batches WHERE id = ?1"
    static let replaceBatch = "UPDATE batches SET payload = ?2, records = ?3, bytes = ?4 WHERE id = ?1"
    static let deleteBatchKeys = "DELETE FROM batch_keys WHERE batch_id = ?1"
    static let keysOfBatch = "SELECT key, records FROM batch_keys WHERE batch_id = ?1"
    static let addDropped = "INSERT INTO dropped (key, records) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET records = records + excluded.records"
    static let totals = "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(bytes), 0), MIN(spilled_ns), MAX(spilled_ns), COALESCE(SUM(lines), 0) FROM batches"
    static let totalsVersion1 = "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(bytes), 0), MIN(spilled_ns), MAX(spilled_ns) FROM batches"
    static let topKeys = "SELECT key, SUM(records) AS n FROM batch_keys GROUP BY key ORDER BY n DESC, key LIMIT ?1"
    static let addRejected = """
        INSERT INTO rejected (key, records, reply, updated_ns) VALUES (?1, ?2, ?3, ?4)
        ON CONFLICT(key) DO UPDATE SET records = records + excluded.records, reply = excluded.reply, updated_ns = excluded.updated_ns
        """
    static let rejectedKeys = "SELECT key, records, reply, updated_ns FROM rejected ORDER BY records DESC, key LIMIT ?1"
    static let insertRequeued = "INSERT INTO requeued (created_ns, records, payload) VALUES (?1, ?2, ?3)"
    static let requeuedRows = "SELECT id, payload FROM requeued ORDER BY id LIMIT ?1"
    static let deleteRequeued = "DELETE FROM requeued WHERE id = ?1"
    static let setAsideRequeued = """
        INSERT INTO unreadable_batches (spilled_ns, records, bytes, payload, lines, reason, set_aside_ns)
        SELECT created_ns, records, length(payload), payload, records, ?2, ?3 FROM requeued WHERE id = ?1
        """
    static let requeuedTotals = "SELECT COUNT(*), COALESCE(SUM(records), 0) FROM requeued"
    /// Whether table ?1 exists (a file written by an earlier version may lack it).
    static let tableExists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1"
    static let droppedKeys = "SELECT key, records FROM dropped ORDER BY records DESC, key LIMIT ?1"
    static let putState = "INSERT INTO agent_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
    static let allState = "SELECT key, value FROM agent_state"
    /// The rows other than ?1 (an earlier version's key/value state).
    static let deleteOtherState = "DELETE FROM agent_state WHERE key <> ?1"
    static let putOffset = """
        INSERT INTO tail_offsets (device, inode, fingerprint, fp_len, offset, size, path, updated_ns)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
        ON CONFLICT(device, inode) DO UPDATE SET fingerprint = excluded.fingerprint, fp_len = excluded.fp_len,
            offset = excluded.offset, size = excluded.size, path = excluded.path, updated_ns = excluded.updated_ns
        """
    static let allOffsets = "SELECT device, inode, fingerprint, fp_len, offset, size, path, updated_ns FROM tail_offsets ORDER BY path, device, inode"
    static let deleteOffset = "DELETE FROM tail_offsets WHERE device = ?1 AND inode = ?2"
    static let tailInputKnown = "SELECT 1 FROM tail_inputs WHERE id = ?1"
    static let addTailInput = "INSERT OR IGNORE INTO tail_inputs (id, started_ns) VALUES (?1, ?2)"

    // MARK: connection settings, checks and transactions

    /// 4 KiB pages (see `Spool.open`).
    static let smallPages = "PRAGMA page_size=4096"
    static let walJournal = "PRAGMA journal_mode=WAL"
    static let synchronousNormal = "PRAGMA synchronous=NORMAL"
    static let synchronousFull = "PRAGMA synchronous=FULL"
    static let secureDeleteFast = "PRAGMA secure_delete=FAST"
    static func walAutocheckpoint(pages: Int) -> String { "PRAGMA wal_autocheckpoint=\(pages)" }
    static func maxPageCount(_ pages: Int) -> String { "PRAGMA max_page_count=\(pages)" }
    static let quickCheck = "PRAGMA quick_check"
    static let pageSize = "PRAGMA page_size"
    static let pageCount = "PRAGMA page_count"
    static let freelistCount = "PRAGMA freelist_count"
    /// Folds the WAL into the database and gives its file back (the appending connection, when the
    /// disk looks full).
    static let checkpointTruncate = "PRAGMA wal_checkpoint(TRUNCATE)"
    /// Never waits for, nor blocks, the writer (the `Checkpointer`'s).
    static let checkpointPassive = "PRAGMA wal_checkpoint(PASSIVE)"
    static let beginImmediate = "BEGIN IMMEDIATE"
    /// A read transaction (`spillway status`: one consistent view).
    static let begin = "BEGIN"
    static let commit = "COMMIT"
    static let rollback = "ROLLBACK"
}
