import CSQLite
import Foundation

// Opening the buffer file: its connection settings, its integrity check, its schema and its migrations.
extension Spool {
    static func open(_ path: String, options: SpoolOptions) throws(SQLiteError) -> SQLiteDatabase {
        // Created 0600 before SQLite sees it; SQLite gives -wal and -shm the same mode.
        if !FileManager.default.fileExists(atPath: path) {
            let fd = path.withCString { Glibc.open($0, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600) }
            if fd >= 0 { Glibc.close(fd) }
        }
        let db = try SQLiteDatabase(path: path)
        // Batches are blobs of hundreds of KB: large pages mean fewer overflow pages. Only takes
        // effect on a new file (before WAL is on).
        try db.exec(Schema.largePages)
        try db.exec(Schema.walJournal)
        try db.exec(options.synchronousFull ? Schema.synchronousFull : Schema.synchronousNormal)
        // Debian builds SQLite with secure_delete on: every page a delete frees would be written
        // again, as zeros, through the WAL (as many bytes as the batch deleted). FAST zeroes only
        // within pages written anyway: deletes stay a few pages, even on a nearly full disk.
        try db.exec(Schema.secureDeleteFast)
        // Checkpoints are the `Checkpointer`'s; this one runs only past 256 MB of WAL (a bound).
        try db.exec(Schema.walAutocheckpoint(pages: Self.walBoundPages))
        if let pages = options.maxPageCount { try db.exec(Schema.maxPageCount(pages)) }
        let check = try db.prepare(Schema.quickCheck)
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
}
