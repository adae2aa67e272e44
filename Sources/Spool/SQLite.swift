import CSQLite

/// A SQLite error with its result code and message.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var message: String
    public var description: String { "SQLite error \(code): \(message)" }

    /// The disk (or the database) is full: SQLITE_FULL, or an I/O error from ENOSPC.
    public var isFull: Bool { code & 0xFF == SQLITE_FULL || message.contains("No space left") }
    /// The file is not a database, or is damaged.
    public var isCorrupt: Bool { code & 0xFF == SQLITE_CORRUPT || code & 0xFF == SQLITE_NOTADB }
}

/// One SQLite connection (the system libsqlite3 through its C API). Not thread-safe: one owner.
final class SQLiteDatabase {
    private(set) var handle: OpaquePointer?

    init(path: String, readOnly: Bool = false) throws(SQLiteError) {
        var db: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        let rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: "\(path): \(message)")
        }
        handle = db
        sqlite3_busy_timeout(db, 2000)
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { close() }

    func close() {
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    func error(_ rc: Int32) -> SQLiteError {
        SQLiteError(code: rc, message: handle.map { String(cString: sqlite3_errmsg($0)) } ?? "closed")
    }

    /// Runs statements that return no rows.
    func exec(_ sql: String) throws(SQLiteError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "error"
            sqlite3_free(message)
            throw SQLiteError(code: rc, message: text)
        }
    }

    func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc) }
        return Statement(stmt, db: self)
    }

    var changes: Int { Int(sqlite3_changes(handle)) }
    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
}

/// A prepared statement, reused: `reset()` and bind again.
final class Statement {
    let stmt: OpaquePointer
    unowned let db: SQLiteDatabase

    init(_ stmt: OpaquePointer, db: SQLiteDatabase) {
        self.stmt = stmt
        self.db = db
    }

    deinit { sqlite3_finalize(stmt) }

    @discardableResult
    func reset() -> Statement {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        return self
    }

    func bind(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(stmt, i, v) }
    func bind(_ i: Int32, _ v: String) { sqlite3_bind_text(stmt, i, v, -1, spillway_sqlite_transient()) }
    func bind(_ i: Int32, blob: [UInt8]) {
        _ = blob.withUnsafeBytes { sqlite3_bind_blob(stmt, i, $0.baseAddress, Int32($0.count), spillway_sqlite_transient()) }
    }

    /// Steps once: true when a row is available, false when done.
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw db.error(rc)
    }

    /// Steps to the end (statements without rows).
    func run() throws(SQLiteError) {
        while try step() {}
    }

    /// Binds `blob` at `i` without copying it (SQLite reads it in place), runs the statement, and
    /// unbinds it before returning, so SQLite never holds the pointer past the array's lifetime.
    func run(binding blob: ArraySlice<UInt8>, at i: Int32) throws(SQLiteError) {
        let failure: SQLiteError? = blob.withUnsafeBytes { bytes in
            sqlite3_bind_blob(stmt, i, bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(bytes.count), nil)
            var rc: Int32
            repeat { rc = sqlite3_step(stmt) } while rc == SQLITE_ROW
            let failure = rc == SQLITE_DONE ? nil : db.error(rc)
            sqlite3_reset(stmt)
            sqlite3_bind_null(stmt, i)
            return failure
        }
        if let failure { throw failure }
    }

    func int64(_ col: Int32) -> Int64 { sqlite3_column_int64(stmt, col) }
    var columnCount: Int32 { sqlite3_column_count(stmt) }
    func isNull(_ col: Int32) -> Bool { sqlite3_column_type(stmt, col) == SQLITE_NULL }
    func string(_ col: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, col) else { return "" }
        return String(cString: p)
    }
    func blob(_ col: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(stmt, col))
        guard n > 0, let p = sqlite3_column_blob(stmt, col) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}
