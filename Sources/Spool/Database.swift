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
        // SQLite's default, 4 KiB pages, set outright (a build could default otherwise): every
        // page a transaction touches is written whole to the WAL and then to the file, and a batch
        // changes a few small pages besides its blob's (the row's leaf, its keys, tail offsets,
        // and the freelist when a delivered batch is deleted). With 64 KiB pages, as before,
        // the tail benchmark wrote 851 bytes per line to the disk; with 4 KiB, 202 (the line's
        // blob is about 160), and spilling and replaying went no slower. Only takes effect on a
        // new file (before WAL is on): a buffer made with 64 KiB pages keeps them.
        try db.exec(Schema.smallPages)
        try db.exec(Schema.walJournal)
        try db.exec(options.synchronousFull ? Schema.synchronousFull : Schema.synchronousNormal)
        // Debian builds SQLite with secure_delete on: every page a delete frees would be written
        // again, as zeros, through the WAL (as many bytes as the batch deleted). FAST zeroes only
        // within pages written anyway: deletes stay a few pages, even on a nearly full disk.
        try db.exec(Schema.secureDeleteFast)
        // Checkpoints are the `Checkpointer`'s; this one runs only past 256 MiB of WAL (a bound),
        // counted in the file's own pages (4 KiB, or 64 KiB in a buffer made before).
        try db.exec(Schema.walAutocheckpoint(pages: Int(Self.walBoundBytes / pageSize(of: db))))
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

    /// The file's page size in bytes (at least 512).
    static func pageSize(of db: SQLiteDatabase) throws(SQLiteError) -> Int64 {
        let size = try db.prepare(Schema.pageSize)
        defer { _ = size.reset() }
        return try size.step() ? max(512, size.int64(0)) : 4096
    }
}
