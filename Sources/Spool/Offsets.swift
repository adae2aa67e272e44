import SpillwayCore

/// A tailed file's committed offset and when it was committed.
public struct TailOffset: Sendable, Equatable {
    public var checkpoint: FileCheckpoint
    public var updatedNs: Int64
}

// Tailed files' offsets, and the tail inputs that have started once.
extension Spool {
    func saveOffsetsLocked(_ checkpoints: [FileCheckpoint], now: Int64) throws(SQLiteError) {
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
}
