import Foundation
import SpillwayBatch
import SpillwayCore
@testable import Spool
import Testing

func tempDir() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-spool-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    return dir
}

/// A batch of `n` XADDs to `key`, IDs from `firstMs`, each with a message of its own (about 200
/// bytes stored per record).
func batch(_ n: Int, key: String = "metrics:h:cpu", firstMs: Int = 1) -> EncodedBatch {
    let commands = (0..<n).map { i -> EncodedCommand in
        let c = RedisCommand(["XADD", key, "MAXLEN", "~", "100000", "\(firstMs + i)-0", "usage_user", "1.5", "tag_host", "h", "timestamp", "\(firstMs + i)",
                              "message", "line \(firstMs + i): " + String(repeating: "x", count: 160)])
        return EncodedCommand(command: c, key: Array(key.utf8), role: .record(i))
    }
    return EncodedBatch(commands: commands, recordCount: n, rejectedAtEncoding: 0, skippedFields: 0)
}

@Suite struct Serialization {
    @Test func roundTrip() throws {
        var b = batch(3)
        b.append(RedisCommand(["TS.MADD", "k", "1", "2.5", "k", "2", "\u{0}\u{FF}"]), keyArgument: 0, role: .samples(owners: [0, 2]))
        b.append(RedisCommand(["TS.CREATE", "k"]), keyArgument: 1, role: .setup)
        b.append(RedisCommand(["TS.CREATERULE", "k", "k:avg_1m", "AGGREGATION", "avg", "60000"]), keyArgument: 2, role: .setup)
        let back = try EncodedBatch(serialized: b.serialized())
        #expect(back.recordCount == 3)
        #expect(back.commandCount == 6)
        #expect(back.commands.map(\.command) == b.commands.map(\.command))
        #expect(back.commands.map(\.role) == b.commands.map(\.role))
        #expect(back.commands.map { String(decoding: $0.key, as: UTF8.self) }
                == ["metrics:h:cpu", "metrics:h:cpu", "metrics:h:cpu", "TS.MADD", "k", "k:avg_1m"])
        #expect(back.commands[5].command.strings == ["TS.CREATERULE", "k", "k:avg_1m", "AGGREGATION", "avg", "60000"])
    }

    @Test func repeatedArgumentsAreStoredOnce() throws {
        // 100 XADDs that differ only in their ID and timestamp: the rest is written once.
        let b = EncodedBatch(commands: (0..<100).map { i in
            EncodedCommand(command: RedisCommand(["XADD", "metrics:h:cpu", "MAXLEN", "~", "100000", "\(i + 1)-0", "usage_user", "1.5",
                                                  "usage_system", "0.5", "tag_host", "h", "timestamp", "\(i + 1)"]),
                           key: Array("metrics:h:cpu".utf8), role: .record(i))
        }, recordCount: 100, rejectedAtEncoding: 0, skippedFields: 0)
        let payload = b.serialized()
        #expect(payload.count < b.bytes.count / 4, "\(payload.count) bytes for \(b.bytes.count) bytes of RESP")
        let back = try EncodedBatch(serialized: payload)
        #expect(back.bytes == b.bytes)
        #expect(back.commands.map(\.role) == b.commands.map(\.role))
        #expect(back.commands.map(\.key) == b.commands.map(\.key))
    }

    @Test func theStoredFormReadsBackAsTheSameRESP() throws {
        let b = batch(3)
        let payload = b.serialized()
        let first = "*14\r\n$4\r\nXADD\r\n$13\r\nmetrics:h:cpu\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n$6\r\n100000\r\n$3\r\n1-0\r\n"
        #expect(String(decoding: b.bytes.prefix(first.utf8.count), as: UTF8.self) == first)
        let back = try EncodedBatch(serialized: payload)
        #expect(back.bytes == b.bytes)
        #expect((0..<3).map { back.span($0) } == (0..<3).map { b.span($0) })
        #expect(back.commands.map(\.key) == b.commands.map(\.key))
        // A command with more arguments than the one before it, then fewer, then an empty argument.
        var mixed = EncodedBatch(recordCount: 0)
        mixed.append(RedisCommand(["TS.CREATE", "k"]), keyArgument: 1, role: .setup)
        mixed.append(RedisCommand(["TS.CREATE", "k", "LABELS", "a", ""]), keyArgument: 1, role: .setup)
        mixed.append(RedisCommand(["TS.CREATE", "k2", "LABELS"]), keyArgument: 1, role: .setup)
        mixed.append(RedisCommand(["TS.CREATE", "k2", "", "a", ""]), keyArgument: 1, role: .setup)
        let again = try EncodedBatch(serialized: mixed.serialized())
        #expect(again.commands.map(\.command.strings) == mixed.commands.map(\.command.strings))
        #expect(again.bytes == mixed.bytes)
    }

    @Test func versionThreeBatchesAreStillRead() throws {
        // Written by the previous version: per command its role, key argument, argc, then each
        // argument as 0 (the previous command's argument at that place) or length + 1 and its bytes.
        func arg(_ s: String) -> [UInt8] { [UInt8(s.utf8.count + 1)] + Array(s.utf8) }
        var bytes: [UInt8] = [3, 2, 0, 0, 3]
        bytes += [0, 0, 1, 5] + arg("XADD") + arg("k") + arg("1-0") + arg("f") + arg("1")
        bytes += [0, 1, 1, 5] + [0, 0] + arg("2-0") + [0] + arg("2")
        bytes += [2, 1, 2] + [0] + arg("k2")
        let b = try EncodedBatch(serialized: bytes)
        #expect(b.recordCount == 2 && b.commandCount == 3)
        #expect(b.commands.map(\.command.strings) == [["XADD", "k", "1-0", "f", "1"], ["XADD", "k", "2-0", "f", "2"], ["XADD", "k2"]])
        #expect(b.commands.map(\.role) == [.record(0), .record(1), .setup])
        #expect(b.commands.map { String(decoding: $0.key, as: UTF8.self) } == ["k", "k", "k2"])
        #expect(String(decoding: b.bytes.prefix(19), as: UTF8.self) == "*5\r\n$4\r\nXADD\r\n$1\r\nk")
    }

    @Test func versionTwoBatchesAreStillRead() throws {
        // Written by an earlier version: per command the key's bytes, then every argument's.
        func v2(_ commands: [(role: [UInt8], key: String, args: [String])], records: UInt8) -> [UInt8] {
            var out: [UInt8] = [2, records, 0, 0, UInt8(commands.count)]
            for c in commands {
                out += c.role
                out += [UInt8(c.key.utf8.count)] + Array(c.key.utf8)
                out += [UInt8(c.args.count)] + c.args.map { UInt8($0.utf8.count) }
                for a in c.args { out += Array(a.utf8) }
            }
            return out
        }
        let bytes = v2([([0, 0], "metrics:h:cpu", ["XADD", "metrics:h:cpu", "1-0", "f", "1"]),
                        ([1, 2, 0, 1], "TS.MADD", ["TS.MADD", "k", "1", "2.5", "k", "2", "3"]),
                        ([2], "k:avg", ["TS.CREATERULE", "k", "k:avg", "AGGREGATION", "avg", "60000"])], records: 2)
        let b = try EncodedBatch(serialized: bytes)
        #expect(b.recordCount == 2 && b.commandCount == 3)
        #expect(b.commands.map(\.command.strings) == [["XADD", "metrics:h:cpu", "1-0", "f", "1"],
                                                      ["TS.MADD", "k", "1", "2.5", "k", "2", "3"],
                                                      ["TS.CREATERULE", "k", "k:avg", "AGGREGATION", "avg", "60000"]])
        #expect(b.commands.map(\.role) == [.record(0), .samples(owners: [0, 1]), .setup])
        #expect(b.commands.map { String(decoding: $0.key, as: UTF8.self) } == ["metrics:h:cpu", "TS.MADD", "k:avg"])
        // A key that is none of the arguments is an error.
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: v2([([2], "nope", ["TS.CREATE", "k"])], records: 0)) }
    }

    @Test func truncatedOrGarbageIsAnErrorNeverACrash() {
        let bytes = batch(2).serialized()
        for n in 0..<bytes.count {
            #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: Array(bytes.prefix(n))) }
        }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: bytes + [0]) }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F]) }
        // Version 4 (a record command: role 0, index 0; key argument 0; argc 1; then its arguments):
        // one argument reads back as RESP; an argument cut short, a key past the arguments, a
        // first command that refers to a previous one, a record the batch does not have, a
        // sample's owner it does not have, a TS.MADD with fewer samples than owners: errors.
        let x: [UInt8] = [2, 0x78]
        #expect((try? EncodedBatch(serialized: [4, 1, 0, 0, 1, 0, 0, 0, 1] + x))?.bytes == Array("*1\r\n$1\r\nx\r\n".utf8))
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [4, 1, 0, 0, 1, 0, 0, 0, 1, 3, 0x78]) }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [4, 1, 0, 0, 1, 0, 0, 1, 1] + x) }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [4, 1, 0, 0, 1, 0, 0, 0, 1, 0]) }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [4, 1, 0, 0, 1, 0, 5, 0, 1] + x) }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [4, 1, 0, 0, 1, 1, 1, 5, 0, 4] + x + x + x + x) }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [4, 1, 0, 0, 1, 1, 1, 0, 0, 1] + x) }
        #expect((try? EncodedBatch(serialized: [4, 1, 0, 0, 1, 1, 1, 0, 0, 4] + x + x + x + x))?.commandCount == 1)
        // Arguments that refer back again and again cannot make it take more than the bound.
        var echo: [UInt8] = [4, 101, 0, 0, 101, 0, 0, 0, 1, 101] + Array(repeating: 0x61, count: 100)
        for i in 1...100 { echo += [0, UInt8(i), 0, 1, 0] }
        #expect((try? EncodedBatch(serialized: echo))?.commandCount == 101)
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: echo, maxDecodedBytes: 5000) }
        // Version 3: a first command that refers to a previous one; a key past the arguments.
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [3, 1, 0, 0, 1, 0, 0, 0, 1, 0]) }
        #expect(throws: EncodedBatch.FormatError.self) { try EncodedBatch(serialized: [3, 1, 0, 0, 1, 0, 0, 1, 1, 2, 0x41]) }
        // Every byte of a valid batch changed: an error or a batch, never a crash.
        let valid = batch(3).serialized()
        for i in valid.indices {
            for v: UInt8 in [0, 1, 0x7F, 0x80, 0xFF] {
                var b = valid
                b[i] = v
                _ = try? EncodedBatch(serialized: b)
            }
        }
    }
}

@Suite struct Buffer {
    @Test func theWALIsCheckpointedOffTheAppendingThread() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        func size(_ suffix: String) -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: dir + "/buffer.sqlite" + suffix))?[.size] as? Int) ?? 0
        }
        let before = size("")
        // About 12 MB of batches: far below the appending connection's own checkpoint bound (256 MB),
        // so only the background checkpointer can move them into the database file.
        // (How big the WAL gets depends on how fast the appends go against the checkpoints: no
        // bound on it is asserted.)
        for i in 0..<60 { #expect(try spool.append(batch(1000, firstMs: i * 1000 + 1), now: Int64(i)).stored) }
        let deadline = monotonicNanoseconds() + 5_000_000_000
        while size("") < before + 5_000_000, monotonicNanoseconds() < deadline { usleep(20_000) }
        #expect(size("") >= before + 5_000_000, "database file \(size("")) bytes, WAL \(size("-wal"))")
        #expect(spool.totals.batches == 60 && spool.totals.records == 60_000)
        // Reopened, everything is there.
        #expect(try Spool(directory: dir).totals.records == 60_000)
    }

    /// A new buffer has 4 KiB pages, and its own checkpoint bound is 256 MiB of them.
    @Test func newBuffersHaveSmallPagesAndA256MiBCheckpointBound() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        #expect(try pragma(spool.db, "PRAGMA page_size") == 4096)
        #expect(try pragma(spool.db, "PRAGMA wal_autocheckpoint") == 65_536)
    }

    /// A buffer made with 64 KiB pages (as earlier versions made it) keeps them: its checkpoint
    /// bound is still 256 MiB (4,096 of its pages), and batches go in and come back out in order.
    @Test func aBufferWith64KiBPagesKeepsThemAndWorks() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let old = try SQLiteDatabase(path: dir + "/buffer.sqlite")
        try old.exec("PRAGMA page_size=65536")
        try old.exec("PRAGMA journal_mode=WAL")
        try old.exec("CREATE TABLE made_before (x)")
        old.close()
        let spool = try Spool(directory: dir)
        #expect(try pragma(spool.db, "PRAGMA page_size") == 65_536)
        #expect(try pragma(spool.db, "PRAGMA wal_autocheckpoint") == 4096)
        for i in 0..<3 { #expect(try spool.append(batch(1000, firstMs: i * 1000 + 1), now: Int64(i)).stored) }
        let (batches, bad) = try spool.oldestBatches(limit: 3)
        #expect(bad.isEmpty && batches.map { $0.batch.commands[0].command.strings[5] } == ["1-0", "1001-0", "2001-0"])
        #expect(batches.allSatisfy { $0.batch.bytes == batch(1000, firstMs: Int($0.batch.commands[0].command.strings[5].dropLast(2))!).bytes })
        try spool.acknowledge(id: batches[0].id, records: 1000)
        #expect(spool.totals.batches == 2 && spool.totals.records == 2000)
    }

    @Test func appendsInOrderAndDeletesOnlyWhenAcknowledged() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        #expect(spool.isEmpty)
        for i in 0..<5 { #expect(try spool.append(batch(10, firstMs: i * 10 + 1), now: Int64(i)).stored) }
        #expect(spool.totals.batches == 5 && spool.totals.records == 50)
        let (first, bad) = try spool.oldestBatches(limit: 2)
        #expect(bad.isEmpty)
        #expect(first.map { $0.batch.commands[0].command.strings[5] } == ["1-0", "11-0"])
        try spool.acknowledge(id: first[0].id, records: 10)
        #expect(spool.totals.records == 40)
        // A reopened buffer (a restart) has the same backlog, same order.
        let again = try Spool(directory: dir)
        #expect(again.totals.records == 40 && again.totals.batches == 4)
        #expect(try again.oldestBatches(limit: 1).batches[0].batch.commands[0].command.strings[5] == "11-0")
    }

    @Test func acknowledgedLaterNoLongerWaitsAndIsDeletedWithTheNextAppend() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let one = Int64(batch(10, firstMs: 1).serialized().count)
        var options = SpoolOptions()
        options.maxBytes = one * 2 + one / 2   // room for two batches
        let spool = try Spool(directory: dir, options: options)
        let ids = try (0..<2).map { try #require(spool.append(batch(10, firstMs: $0 * 10 + 1), now: Int64($0)).id) }
        #expect(try spool.oldestID() == ids[0])
        #expect(try spool.newestID() == ids[1])
        spool.acknowledgeLater(id: ids[0])
        // Delivered: it no longer waits, but its row is still there.
        #expect(try spool.oldestID() == ids[1])
        #expect(spool.hasAcknowledgements && spool.totals.batches == 2)
        spool.acknowledgeLater(id: ids[1])
        #expect(spool.isEmpty)
        #expect(try spool.oldestID() == nil)
        #expect(try spool.newestID() == nil)
        // The next append deletes both in its transaction: they make room, and are not dropped.
        let third = try spool.append(batch(10, firstMs: 21), now: 2)
        #expect(third.stored && third.droppedRecords == 0)
        #expect(!spool.hasAcknowledgements)
        #expect(spool.totals.batches == 1 && spool.totals.records == 10)
        #expect(try spool.droppedPerKey().isEmpty)
        // Flushed on its own, too; a reopened buffer agrees.
        spool.acknowledgeLater(id: try #require(third.id))
        try spool.flushAcknowledgements()
        #expect(spool.totals.batches == 0 && spool.isEmpty)
        #expect(try Spool(directory: dir).totals.batches == 0)
    }

    @Test func undecodableRowsAreSetAsideWithTheirPayload() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let spool = try Spool(directory: dir)
            for i in 0..<3 { #expect(try spool.append(batch(4, firstMs: 1 + 10 * i), now: 1).stored) }
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute(\"UPDATE batches SET payload = x'0300' WHERE id = 2\"); db.commit()",
                       dir + "/buffer.sqlite"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let spool = try Spool(directory: dir)
        let (batches, bad) = try spool.oldestBatches(limit: 3)
        #expect(batches.map(\.id) == [1, 3])
        #expect(bad.map(\.id) == [2] && bad.first?.reason.isEmpty == false, "\(bad)")
        try spool.setAside(bad, now: 5)
        #expect(spool.totals.records == 8 && spool.totals.batches == 2)
        #expect(try spool.oldestBatches(limit: 3).batches.map(\.id) == [1, 3])
        #expect(try spool.oldestBatches(limit: 3).unreadable.isEmpty)
        let status = try #require(try SpoolStatus.read(directory: dir))
        #expect(status.unreadable.batches == 1 && status.unreadable.records == 4)
        #expect(status.totals.records == 8)
    }

    @Test func filesAre0600() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        _ = try spool.append(batch(1), now: 0)
        for suffix in ["", "-wal", "-shm"] {
            let mode = try FileManager.default.attributesOfItem(atPath: spool.path + suffix)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(suffix)")
        }
    }

    @Test func dropOldestDropsExactlyWhatTheCountersSay() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let one = Int64(batch(10, key: "k0", firstMs: 1000).serialized().count)
        var options = SpoolOptions()
        options.maxBytes = one * 3 + one / 2   // room for three batches
        let spool = try Spool(directory: dir, options: options)
        var dropped: Int64 = 0
        for i in 0..<7 {
            let outcome = try spool.append(batch(10, key: "k\(i % 2)", firstMs: 1000 + i * 10), now: Int64(i))
            #expect(outcome.stored)
            dropped += outcome.droppedRecords
        }
        #expect(dropped == 40 && spool.totals.records == 30 && spool.totals.batches == 3)
        // The three newest are kept, in order.
        #expect(try spool.oldestBatches(limit: 10).batches.map { $0.batch.commands[0].command.strings[5] } == ["1040-0", "1050-0", "1060-0"])
        #expect(try spool.droppedPerKey() == ["k0": 20, "k1": 20])
    }

    /// A row on the wire (sent, its replies not read) is never dropped to make room: Redis may be
    /// taking it, and it would be counted dropped and delivered both. The next oldest goes instead;
    /// once its replies are read, the row may be dropped again.
    @Test func aRowOnTheWireIsNotDroppedToMakeRoom() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let one = Int64(batch(10, key: "k0", firstMs: 1000).serialized().count)
        var options = SpoolOptions()
        options.maxBytes = one * 2 + one / 2   // room for two batches
        let spool = try Spool(directory: dir, options: options)
        let first = try #require(try spool.append(batch(10, firstMs: 1000), now: 0).id)
        _ = try spool.append(batch(10, firstMs: 1010), now: 1)
        spool.markSending(first)
        let third = try spool.append(batch(10, firstMs: 1020), now: 2)
        #expect(third.stored && third.droppedRecords == 10)
        func firstIDs() throws -> [String] { try spool.oldestBatches(limit: 10).batches.map { $0.batch.commands[0].command.strings[5] } }
        #expect(try firstIDs() == ["1000-0", "1020-0"])
        spool.doneSending(first)
        _ = try spool.append(batch(10, firstMs: 1030), now: 3)
        #expect(try firstIDs() == ["1020-0", "1030-0"])
        // Every row on the wire: nothing to drop, the new batch is dropped instead (drop_oldest
        // never takes what Redis may be taking).
        let ids = try spool.oldestBatches(limit: 10).batches.map(\.id)
        for id in ids { spool.markSending(id) }
        let fifth = try spool.append(batch(10, firstMs: 1040), now: 4)
        #expect(!fifth.stored)
        #expect(try firstIDs() == ["1020-0", "1030-0"])
    }

    @Test func dropNewestKeepsTheOldest() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = SpoolOptions()
        options.maxBytes = Int64(batch(10, firstMs: 1000).serialized().count) * 2
        options.whenFull = .dropNewest
        let spool = try Spool(directory: dir, options: options)
        let outcomes = try (0..<4).map { try spool.append(batch(10, firstMs: 1000 + $0 * 10), now: Int64($0)) }
        #expect(outcomes.map(\.stored) == [true, true, false, false])
        #expect(outcomes.map(\.droppedRecords) == [0, 0, 10, 10])
        #expect(try spool.oldestBatches(limit: 10).batches.map { $0.batch.commands[0].command.strings[5] } == ["1000-0", "1010-0"])
    }

    @Test func maxAgeDropsOldBatches() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = SpoolOptions()
        options.maxAge = 1_000
        let spool = try Spool(directory: dir, options: options)
        _ = try spool.append(batch(5), now: 0)
        _ = try spool.append(batch(5, firstMs: 6), now: 500)
        let outcome = try spool.append(batch(5, firstMs: 11), now: 1_200)
        #expect(outcome.stored && outcome.droppedRecords == 5)
        #expect(spool.totals.records == 10)
    }

    @Test func corruptFileIsMovedAside() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(repeating: 0xAB, count: 8192).write(to: URL(fileURLWithPath: dir + "/buffer.sqlite"))
        let spool = try Spool(directory: dir)
        let aside = try #require(spool.movedAside)
        #expect(aside.hasPrefix(dir + "/buffer.sqlite.corrupt-"))
        #expect(FileManager.default.fileExists(atPath: aside))
        #expect(spool.isEmpty)
        #expect(try spool.append(batch(1), now: 0).stored)
    }
}

extension Buffer {
    /// A buffer another process holds locked (SQLITE_BUSY) is an error to report, never taken for
    /// corruption: nothing is moved aside and the backlog stays.
    @Test func busyIsNotCorrupt() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let spool = try Spool(directory: dir)
            _ = try spool.append(batch(3), now: 0)
        }
        // Another process holds the database's write lock for 4 s (longer than the 2 s busy timeout).
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        holder.arguments = ["-c", """
            import sqlite3, sys, time
            c = sqlite3.connect(sys.argv[1], isolation_level=None)
            c.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            time.sleep(4)
            """, dir + "/buffer.sqlite"]
        let out = Pipe()
        holder.standardOutput = out
        try holder.run()
        defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) }; holder.waitUntilExit() }
        let ready = out.fileHandleForReading.availableData
        #expect(String(decoding: ready, as: UTF8.self).hasPrefix("locked"))
        var failure: SQLiteError?
        do {
            _ = try Spool(directory: dir)
        } catch {
            failure = error
        }
        #expect((failure?.code ?? 0) & 0xFF == 5, "\(String(describing: failure))")  // SQLITE_BUSY
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(!names.contains { $0.contains("corrupt") }, "\(names)")
        holder.waitUntilExit()
        let spool = try Spool(directory: dir)
        #expect(spool.movedAside == nil)
        #expect(spool.totals.records == 3)
    }
}

@Suite struct FullDisk {
    /// A buffer capped at 640 pages of 4 KiB (2.5 MiB): SQLite answers SQLITE_FULL past it, as on a
    /// full disk.
    static func smallSpool(_ dir: String) throws -> Spool {
        var options = SpoolOptions()
        options.maxPageCount = 640
        return try Spool(directory: dir, options: options)
    }

    /// SQLITE_FULL (here from max_page_count, as from a full disk) is "full": drop per policy, keep
    /// running, count every dropped record.
    @Test func fullIsHandledAsFull() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Self.smallSpool(dir)
        var stored = 0, full = 0
        var dropped: Int64 = 0
        for i in 0..<60 {
            let outcome = try spool.append(batch(1000, key: "k", firstMs: 1_000_000 + i * 1000), now: Int64(i))
            if outcome.stored { stored += 1 }
            if outcome.diskFull { full += 1 }
            dropped += outcome.droppedRecords
        }
        #expect(full > 0, "never full")
        #expect(stored > 0)
        // Every record is either in the buffer or counted as dropped.
        #expect(spool.totals.records + dropped == 60_000, "\(spool.totals.records) + \(dropped)")
        #expect(try spool.droppedPerKey()["k"] == dropped)
        // drop_oldest: what is kept is the newest.
        let newest: String? = try spool.oldestBatches(limit: 100).batches.last?.batch.commands[0].command.strings[5]
        #expect(newest == String(1_000_000 + 59 * 1000) + "-0")
    }
}

extension FullDisk {
    /// A delivered batch whose deletion was deferred stays delivered when the append that was to
    /// delete it is rolled back on a full disk: it is freed, never counted as dropped.
    @Test func deliveredBatchesAreFreedNotDroppedWhenTheDiskIsFull() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Self.smallSpool(dir)
        for i in 0..<5 { #expect(try spool.append(batch(400, key: "k", firstMs: 1_000_000 + i * 1000), now: Int64(i)).stored) }
        for id in try spool.oldestBatches(limit: 100).batches.map(\.id) { spool.acknowledgeLater(id: id) }
        #expect(spool.isEmpty && spool.hasAcknowledgements)
        // A batch larger than the whole file: its transaction (which deletes the delivered rows
        // first) fails and is rolled back, then the full-disk path runs.
        let outcome = try spool.append(batch(40_000, key: "big", firstMs: 5_000_000), now: 10)
        #expect(!outcome.stored && outcome.diskFull)
        #expect(outcome.droppedRecords == 40_000)
        #expect(try spool.droppedPerKey() == ["big": 40_000])
        #expect(!spool.hasAcknowledgements)
        #expect(spool.totals.batches == 0 && spool.isEmpty)
    }
}

/// A batch of `n` tailed lines of file `inode`, read up to `offset`.
func lineBatch(_ n: Int, inode: UInt64, offset: Int64, firstMs: Int = 1) -> EncodedBatch {
    var b = batch(n, key: "metrics:h:log", firstMs: firstMs)
    b.lineCount = n
    b.checkpoints = [FileCheckpoint(identity: FileIdentity(device: 7, inode: inode), fingerprint: 0xABCD, fingerprintLength: 256,
                                    offset: offset, size: offset + 10, path: "/var/log/f\(inode).log")]
    return b
}

@Suite struct TailOffsets {
    @Test func offsetsAreCommittedWithTheBatchAndSurviveAReopen() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        #expect(try spool.append(lineBatch(5, inode: 1, offset: 100), now: 1).stored)
        #expect(try spool.append(lineBatch(5, inode: 1, offset: 250, firstMs: 6), now: 2).stored)
        #expect(try spool.append(lineBatch(2, inode: 2, offset: 30), now: 3).stored)
        #expect(spool.totals.lines == 12)
        let again = try Spool(directory: dir)
        let offsets = try again.offsets()
        #expect(offsets.map(\.offset) == [250, 30] && offsets.map(\.identity.inode) == [1, 2])
        #expect(offsets[0].fingerprint == 0xABCD && offsets[0].fingerprintLength == 256 && offsets[0].path == "/var/log/f1.log")
        // Acknowledging the batches leaves the offsets.
        for (id, b) in try again.oldestBatches(limit: 10).batches { try again.acknowledge(id: id, records: Int64(b.recordCount)) }
        #expect(again.totals.lines == 0 && again.totals.records == 0)
        #expect(try again.offsets().map(\.offset) == [250, 30])
        try again.forgetOffsets([FileIdentity(device: 7, inode: 2)])
        #expect(try again.offsets().map(\.identity.inode) == [1])
        let status = try #require(try SpoolStatus.read(directory: dir))
        #expect(status.offsets.map(\.checkpoint.offset) == [250])
        // First start registration.
        #expect(try !again.isTailInputKnown("tail:/x"))
        try again.registerTailInput("tail:/x", offsets: [lineBatch(1, inode: 9, offset: 77).checkpoints[0]], now: 5)
        #expect(try again.isTailInputKnown("tail:/x"))
        #expect(try again.offsets().contains { $0.identity.inode == 9 && $0.offset == 77 })
    }

    @Test func batchesWithLinesAreNeverDroppedToMakeRoom() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let one = Int64(lineBatch(20, inode: 1, offset: 1).serialized().count)
        for policy in [WhenFull.dropOldest, .dropNewest] {
            var options = SpoolOptions()
            options.maxBytes = one * 3 + one / 2
            options.whenFull = policy
            options.maxAge = 1_000
            let spool = try Spool(directory: tempDir(), options: options)
            #expect(try spool.append(lineBatch(20, inode: 1, offset: 100), now: 0).stored)
            #expect(try spool.append(batch(20, firstMs: 100), now: 0).stored)
            #expect(try spool.append(lineBatch(20, inode: 1, offset: 200, firstMs: 200), now: 0).stored)
            // Full: a metrics batch gives way (the new one for drop_newest, the old one for drop_oldest).
            let m = try spool.append(batch(20, firstMs: 300), now: 10)
            #expect(m.droppedRecords == 20)
            // max_age passed for every row: only the metrics row may go. Lines make room by dropping it.
            let l = try spool.append(lineBatch(20, inode: 1, offset: 300, firstMs: 400), now: 5_000)
            #expect(l.stored && !l.noRoom)
            #expect(spool.totals.lines == 60)
            // Nothing without lines is left: a batch of lines waits, one of metrics is dropped.
            let wait = try spool.append(lineBatch(20, inode: 1, offset: 400, firstMs: 500), now: 5_000)
            #expect(!wait.stored && wait.noRoom && wait.droppedRecords == 0)
            #expect(try spool.offsets().first?.offset == 300)  // not advanced by the batch not stored
            let drop = try spool.append(batch(20, firstMs: 600), now: 5_000)
            #expect(!drop.stored && drop.droppedRecords == 20)
            #expect(spool.totals.lines == 60 && spool.totals.records == 60)
        }
    }

    @Test func aFullDiskMakesLinesWaitWithoutLoss() throws {
        var options = SpoolOptions()
        // The schema's 13 tables take a page each; room for a few batches past them (48 pages of
        // 4 KiB).
        options.maxPageCount = 13 + 48
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir, options: options)
        var stored = 0
        var waited = false
        for i in 0..<200 {
            let o = try spool.append(lineBatch(50, inode: 3, offset: Int64(i + 1) * 1000, firstMs: i * 50 + 1), now: 0)
            if o.stored { stored += 1 } else {
                #expect(o.noRoom && o.diskFull && o.droppedRecords == 0)
                waited = true
                break
            }
        }
        #expect(waited && stored > 0)
        #expect(spool.totals.lines == Int64(stored * 50))
        #expect(try spool.offsets().first?.offset == Int64(stored) * 1000)
    }
}

@Suite struct Migration {
    /// A version 1 buffer (no lines column, no offsets tables): status reads it, and opening it adds
    /// what version 2 needs, keeping its backlog.
    @Test func versionOneFileIsReadAndMigrated() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/buffer.sqlite"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            db.executescript('''
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, spilled_ns INTEGER NOT NULL, records INTEGER NOT NULL, bytes INTEGER NOT NULL, payload BLOB NOT NULL);
            CREATE TABLE batch_keys (batch_id INTEGER NOT NULL, key BLOB NOT NULL, records INTEGER NOT NULL, PRIMARY KEY (batch_id, key)) WITHOUT ROWID;
            CREATE TABLE dropped (key BLOB PRIMARY KEY, records INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            ''')
            db.execute("INSERT INTO batches (spilled_ns, records, bytes, payload) VALUES (1, 10, ?, ?)", (len(sys.argv[2]), bytes.fromhex(sys.argv[2])))
            db.commit()
            """, path, batch(10).serialized().map { String(format: "%02x", $0) }.joined()]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let before = try #require(try SpoolStatus.read(directory: dir))
        #expect(before.totals.records == 10 && before.totals.lines == 0 && before.offsets.isEmpty)
        let spool = try Spool(directory: dir)
        #expect(spool.totals.records == 10)
        #expect(try spool.append(lineBatch(3, inode: 4, offset: 33, firstMs: 100), now: 2).stored)
        #expect(spool.totals.lines == 3 && spool.totals.records == 13)
        #expect(try spool.offsets().map(\.offset) == [33])
        #expect(try spool.oldestBatches(limit: 1).batches.first?.batch.recordCount == 10)
    }
}

/// A pragma's value on `db`.
func pragma(_ db: SQLiteDatabase, _ sql: String) throws -> Int64 {
    let s = try db.prepare(sql)
    guard try s.step() else { return -1 }
    return s.int64(0)
}
