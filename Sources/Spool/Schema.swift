/// All of the spill buffer's SQL. Migrations are additive: a new version adds tables or columns and
/// never rewrites old ones.
enum Schema {
    static let version = 1

    static let create = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- One row per spilled batch, in production order (id). payload: EncodedBatch.serialized().
        CREATE TABLE IF NOT EXISTS batches (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            spilled_ns INTEGER NOT NULL,
            records INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            payload BLOB NOT NULL
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
        INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
        """

    static let insertBatch = "INSERT INTO batches (spilled_ns, records, bytes, payload) VALUES (?1, ?2, ?3, ?4)"
    static let insertBatchKey = "INSERT INTO batch_keys (batch_id, key, records) VALUES (?1, ?2, ?3)"
    static let oldestBatches = "SELECT id, payload FROM batches WHERE id <= ?2 ORDER BY id LIMIT ?1"
    static let oldestBatchForDrop = "SELECT id, records, bytes FROM batches ORDER BY id LIMIT 1"
    static let batchesOlderThan = "SELECT id, records, bytes FROM batches WHERE spilled_ns < ?1 ORDER BY id"
    static let deleteBatch = "DELETE FROM batches WHERE id = ?1"
    static let deleteBatchKeys = "DELETE FROM batch_keys WHERE batch_id = ?1"
    static let keysOfBatch = "SELECT key, records FROM batch_keys WHERE batch_id = ?1"
    static let addDropped = "INSERT INTO dropped (key, records) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET records = records + excluded.records"
    static let totals = "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(bytes), 0), MIN(spilled_ns), MAX(spilled_ns) FROM batches"
    static let topKeys = "SELECT key, SUM(records) AS n FROM batch_keys GROUP BY key ORDER BY n DESC, key LIMIT ?1"
    static let droppedKeys = "SELECT key, records FROM dropped ORDER BY records DESC, key LIMIT ?1"
    static let putState = "INSERT INTO agent_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
    static let allState = "SELECT key, value FROM agent_state"
}
