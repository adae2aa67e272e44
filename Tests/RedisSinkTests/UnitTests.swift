import Foundation
@testable import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import Testing

@Suite struct URLs {
    @Test func eachOwnerOfATSMADDIsCountedOnce() {
        func owners(_ o: [Int]) -> [Int] {
            var out: [Int] = []
            RedisWriter.forEachOwner(o) { out.append($0) }
            return out
        }
        #expect(owners([0, 0, 0, 1, 1, 2]) == [0, 1, 2])
        #expect(owners([3, 1, 3, 2, 1]).sorted() == [1, 2, 3])
        #expect(owners([]) == [])
    }

    @Test func tcpForms() throws {
        #expect(try RedisEndpoint.parse("redis://127.0.0.1:6379/0") == RedisEndpoint(address: .tcp(host: "127.0.0.1", port: 6379)))
        #expect(try RedisEndpoint.parse("redis://localhost") == RedisEndpoint(address: .tcp(host: "localhost", port: 6379)))
        #expect(try RedisEndpoint.parse("redis://user:p%40ss@10.0.0.1:7000/3")
            == RedisEndpoint(address: .tcp(host: "10.0.0.1", port: 7000), username: "user", password: "p@ss", db: 3))
        #expect(try RedisEndpoint.parse("redis://:secret@[::1]:6380/1")
            == RedisEndpoint(address: .tcp(host: "::1", port: 6380), password: "secret", db: 1))
        #expect(try RedisEndpoint.parse("unix:///run/redis.sock?db=2") == RedisEndpoint(address: .unix(path: "/run/redis.sock"), db: 2))
        var tls = RedisEndpoint(address: .tcp(host: "redis.example.com", port: 6380), password: "pw")
        tls.tls = true
        #expect(try RedisEndpoint.parse("rediss://:pw@redis.example.com:6380") == tls)
        #expect(tls.display == "redis.example.com:6380/0 (TLS)")
        #expect(try !RedisEndpoint.parse("redis://h").tls)
        #expect(try RedisEndpoint.parse("redis://[::1]:6380").isLocal)
        #expect(try !RedisEndpoint.parse("redis://10.1.2.3").isLocal)
    }

    @Test func badURLs() {
        for bad in ["http://x", "rediss://x:0", "redis://x:99999", "redis://x:abc", "redis://x/db", "unix://relative.sock", "unix:///s?x=1"] {
            #expect(throws: RedisEndpoint.SyntaxError.self, "\(bad)") { try RedisEndpoint.parse(bad) }
        }
    }

    @Test func redaction() {
        #expect(RedisEndpoint.redacted("redis://u:secret@h:1/0") == "redis://u:***@h:1/0")
        #expect(RedisEndpoint.redacted("redis://h:1/0") == "redis://h:1/0")
        // Whatever the scheme: a url refused for its scheme is printed in the error.
        #expect(RedisEndpoint.redacted("rediss://:TopSecret99@h:6379") == "rediss://:***@h:6379")
        #expect(RedisEndpoint.redacted("REDIS://:TopSecret99@h") == "REDIS://:***@h")
        #expect(RedisEndpoint.redacted("redis:/:TopSecret99@h") == "redis:***@h")
        #expect(RedisEndpoint.redacted("redis://TopSecret99@h") == "redis://***@h")
        #expect(RedisEndpoint.redacted("TopSecret99@h") == "***@h")
        for url in ["rediss://:TopSecret99@127.0.0.1:x/0", "REDIS://:TopSecret99@127.0.0.1", "http://u:TopSecret99@h", "redis://TopSecret99@h:x"] {
            do {
                _ = try RedisEndpoint.parse(url)
                Issue.record("\(url) parsed")
            } catch {
                #expect(!"\(error)".contains("TopSecret99"), "\(error)")
            }
        }
    }
}

@Suite struct Templates {
    @Test func render() throws {
        let r = Record(name: "log", tags: [Tag("host", "h1"), Tag("tenant", "acme")], fields: [], timestamp: 0)
        var out: [UInt8] = []
        try KeyTemplate("prod:rag:drift:{tag.tenant}").render(r, into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "prod:rag:drift:acme")
        out = []
        try KeyTemplate("m:{host}:{name}:{tag.missing}").render(r, into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "m:h1:log:")
        #expect(throws: KeyTemplate.SyntaxError.self) { try KeyTemplate("m:{hots}") }
        #expect(throws: KeyTemplate.SyntaxError.self) { try KeyTemplate("m:{field}") }
        #expect(throws: KeyTemplate.SyntaxError.self) { try KeyTemplate("m:{host") }
        #expect(try KeyTemplate("ts:{field}", allowField: true).parts.count == 2)
    }
}

@Suite struct Minting {
    @Test func strictlyIncreasingPerKey() throws {
        var m = try StreamIDMinter(path: nil)
        let a = Array("a".utf8), b = Array("b".utf8)
        #expect(m.mint(key: a, ms: 1000) == StreamID(ms: 1000, seq: 0))
        #expect(m.mint(key: a, ms: 1000) == StreamID(ms: 1000, seq: 1))
        #expect(m.mint(key: a, ms: 999) == StreamID(ms: 1000, seq: 2))   // clock went back
        #expect(m.mint(key: a, ms: 1001) == StreamID(ms: 1001, seq: 0))
        #expect(m.mint(key: b, ms: 5) == StreamID(ms: 5, seq: 0))       // keys are independent
        m.observe(key: b, id: StreamID(ms: 10, seq: 7))
        #expect(m.mint(key: b, ms: 6) == StreamID(ms: 10, seq: 8))
        m.observe(key: b, id: StreamID(ms: 1, seq: 0))                  // never lowers
        #expect(m.mint(key: b, ms: 6) == StreamID(ms: 10, seq: 9))
        #expect(m.mint(key: Array("c".utf8), ms: 0) == StreamID(ms: 0, seq: 1))  // never 0-0
    }

    @Test(arguments: [true, false]) func marksSurviveARestart(fsync: Bool) throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/stream-ids"
        var m = try StreamIDMinter(path: path, fsync: fsync)
        let key = Array("metrics:h:cpu \u{1}binary".utf8)
        _ = m.mint(key: key, ms: 5000)
        _ = m.mint(key: key, ms: 5000)
        try m.save()
        var again = try StreamIDMinter(path: path)
        #expect(again.last(key) == StreamID(ms: 5000, seq: 1))
        #expect(again.mint(key: key, ms: 10) == StreamID(ms: 5000, seq: 2))  // the clock stepped back across the restart
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test func aCopyCutShortFallsBackToTheOtherAndTheOldFormatStillLoads() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/stream-ids"
        let key = Array("metrics:h:cpu".utf8)
        // The earlier single-file format.
        try "\(key.map { String(format: "%02x", $0) }.joined()) 100-3\n".write(toFile: path, atomically: true, encoding: .utf8)
        var m = try StreamIDMinter(path: path)
        #expect(m.last(key) == StreamID(ms: 100, seq: 3))
        _ = m.mint(key: key, ms: 200)
        try m.save()   // generation 2: stream-ids.alt (the old file counts as generation 1)
        #expect(try String(contentsOfFile: path + ".alt", encoding: .utf8).hasPrefix("spillway-stream-ids 2 2 "))
        _ = m.mint(key: key, ms: 300)
        try m.save()   // generation 3: stream-ids, rewritten in place
        #expect(try StreamIDMinter(path: path).last(key) == StreamID(ms: 300, seq: 0))
        #expect(try String(contentsOfFile: path, encoding: .utf8).hasPrefix("spillway-stream-ids 2 3 "))
        // A crash cut the newest copy short: the older, complete one is used.
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        try full.prefix(full.count - 3).write(to: URL(fileURLWithPath: path))
        var fallback = try StreamIDMinter(path: path)
        #expect(fallback.last(key) == StreamID(ms: 200, seq: 0))
        // The next save overwrites the damaged copy (generation 3 again, in stream-ids).
        _ = fallback.mint(key: key, ms: 250)
        try fallback.save()
        #expect(try StreamIDMinter(path: path).last(key) == StreamID(ms: 250, seq: 0))
        // Both copies damaged: an error, never marks from nothing.
        for file in [path, path + ".alt"] {
            var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
            bytes[bytes.count - 2] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: file))
        }
        #expect(throws: StreamIDMinter.PersistenceError.self) { try StreamIDMinter(path: path) }
    }

    @Test func corruptMarksFileIsAnError() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/stream-ids"
        try "zz not-an-id\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: StreamIDMinter.PersistenceError.self) { try StreamIDMinter(path: path) }
    }
}

@Suite struct Encoding {
    /// cpu records (11 fields, 3 tags) as the spill buffer stores them: what a command shares with
    /// the one before it (name, key, MAXLEN, field names, tags) is stored once, so `max_bytes` holds
    /// about three times the records their RESP would take (docs/guarantees.md gives the figures).
    @Test func theSpillBufferStoresCPURecordsInAThirdOfTheirRESP() throws {
        var encoder = BatchEncoder(config: RedisOutputConfig(), routes: [Route(key: RedisOutputConfig().key, maxlen: 100_000)],
                                   minter: try StreamIDMinter(path: nil))
        let records = (0..<1000).map { i in
            QueuedRecord(record: cpuRecord(cpu: "cpu\(i % 8)", ms: 1_750_000_000_000 + Int64(i / 8) * 1000, base: Double(i % 400) / 8), route: 0)
        }
        let batch = encoder.encode(records, now: 0)
        let stored = batch.serialized().count
        let resp = batch.bytes.count
        print("cpu record: \(resp / 1000) bytes of RESP, \(stored / 1000) stored")
        #expect(stored * 3 < resp, "\(stored) bytes stored for \(resp) bytes of RESP")
        #expect(try EncodedBatch(serialized: batch.serialized()).bytes == batch.bytes)
    }

    /// Records that share their tags' storage (tailed lines share their file's) are written by
    /// copying the head and tags of the run's first command: the batch must be byte for byte what
    /// writing each record in full gives, with the same keys, IDs and marks, across runs of two
    /// keys, two routes, a record alone, MAXLEN and MINID, and two batches. So must lines whose
    /// message is held apart in a chunk (format `raw`), truncated ones (a field after the message)
    /// among them.
    @Test func copiedRunsWriteWhatFullCommandsWrite() throws {
        let fileA = [Tag("host", "h"), Tag("path", "/var/log/a.log")]
        let fileB = [Tag("host", "h"), Tag("path", "/var/log/b.log")]
        func lines(shared: Bool, batch: Int, apart: Bool = false) -> [QueuedRecord] {
            var out: [QueuedRecord] = []
            var chunks = LineChunkWriter(capacity: 256)
            for i in 0..<60 {
                let tags = i % 20 < 12 ? fileA : fileB
                // Unshared: a copy of the tags per record (the encoder then writes each in full).
                let own = shared ? tags : tags.map { Tag($0.key, $0.value) }
                let message = "line \(batch)-\(i) é " + String(repeating: "x", count: i)
                var fields = [Field("message", .string(message))]
                if i % 7 == 3 { fields.append(Field("truncated", .bool(true))) }
                var text: LineText?
                if apart {
                    text = message.utf8CString.withUnsafeBytes { chunks.append(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
                    fields.removeFirst()
                }
                var r = Record(name: i == 30 ? "other" : "tail", fields: fields,
                               timestamp: (1_750_000_000_000 + Int64(batch * 100 + i / 3)) * 1_000_000)
                r.adoptTags(own)
                out.append(QueuedRecord(record: r, route: i >= 50 ? 1 : 0, message: text))
            }
            return out
        }
        /// Two encoders of `config` with the default route and one per file.
        func encoders(_ config: RedisOutputConfig) throws -> (BatchEncoder, BatchEncoder) {
            func encoder() throws -> BatchEncoder {
                BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: 100_000), Route(key: try KeyTemplate("logs:{tag.path}"), maxlen: 0)],
                             minter: try StreamIDMinter(path: nil))
            }
            return (try encoder(), try encoder())
        }
        for format in [RedisOutputConfig.Format.stream, .timeseries] {
            var config = RedisOutputConfig()
            config.format = format
            var (apart, full) = try encoders(config)
            for b in 0..<2 {
                let x = apart.encode(lines(shared: true, batch: b, apart: true), now: 1_750_000_000_000_000_000)
                let y = full.encode(lines(shared: true, batch: b), now: 1_750_000_000_000_000_000)
                #expect(x.bytes == y.bytes && x.commandCount == y.commandCount, "\(format)")
                #expect(x.skippedFields == y.skippedFields && x.recordCount == 60)
                if format == .stream { #expect(x.commandCount == 60 && x.bytes.count > 60 * 100) }
            }
        }
        for maxAge: Int64? in [nil, 3_600_000_000_000] {
            var config = RedisOutputConfig()
            config.maxAge = maxAge
            var (copied, full) = try encoders(config)
            for b in 0..<2 {
                let x = copied.encode(lines(shared: true, batch: b), now: 1_750_000_000_000_000_000)
                let y = full.encode(lines(shared: false, batch: b), now: 1_750_000_000_000_000_000)
                #expect(x.bytes == y.bytes)
                #expect(x.commandCount == 60 && y.commandCount == 60)
                #expect((0..<60).allSatisfy { x.key($0) == y.key($0) && x.argumentRanges($0) == y.argumentRanges($0) })
                #expect(x.keyCounts == y.keyCounts)
                #expect(try EncodedBatch(serialized: x.serialized()).bytes == x.bytes)
            }
            for key in ["metrics:h:tail", "metrics:h:other", "logs:/var/log/a.log", "logs:/var/log/b.log"] {
                let a = copied.ids.withMinter { $0.last(Array(key.utf8)) }
                #expect(a != nil && a == full.ids.withMinter { $0.last(Array(key.utf8)) }, "\(key)")
            }
        }
    }

    @Test func aNewStreamKeyIsAskedAboutOncePerBatchUntilRedisAnswers() throws {
        var encoder = BatchEncoder(config: RedisOutputConfig(), routes: [Route(key: RedisOutputConfig().key, maxlen: 0)],
                                   minter: try StreamIDMinter(path: nil))
        func record(_ name: String, _ ms: Int64) -> QueuedRecord {
            QueuedRecord(record: Record(name: name, tags: [Tag("host", "h")], fields: [Field("v", .int(1))], timestamp: ms * 1_000_000), route: 0)
        }
        let records = [record("a", 10), record("a", 11), record("b", 10), record("a", 12), record("b", 11)]
        var asked: [String] = []
        // Redis does not answer: each key is asked once in the batch, and again with the next one.
        _ = encoder.encode(records, now: 0) { key in asked.append(String(decoding: key, as: UTF8.self)); return nil }
        #expect(asked == ["metrics:h:a", "metrics:h:b"])
        // It answers: a has entries up to 5000-3, b does not exist. Minting starts above a's top;
        // b goes on from the marks of the first batch (11-0).
        asked = []
        let batch = encoder.encode(records, now: 0) { key in
            asked.append(String(decoding: key, as: UTF8.self))
            return key == Array("metrics:h:a".utf8) ? .some(StreamID(ms: 5000, seq: 3)) : .some(nil)
        }
        #expect(asked == ["metrics:h:a", "metrics:h:b"])
        #expect(batch.commands.map { $0.command.strings[2] } == ["5000-4", "5000-5", "11-1", "5000-6", "11-2"])
        // Both are known now: not asked again.
        asked = []
        _ = encoder.encode(records, now: 0) { key in asked.append(String(decoding: key, as: UTF8.self)); return nil }
        #expect(asked.isEmpty)
    }

    @Test func numbersAndIDsAreWrittenAsDigits() {
        var c = RedisCommand()
        for v: Int64 in [0, 7, 10, 99, -1, -120, 1_700_000_000_123, .max, .min] { c.append(v) }
        c.append(StreamID(ms: 0, seq: 1))
        c.append(StreamID(ms: UInt64.max, seq: 42))
        c.append(FieldValue.uint(UInt64.max))
        c.append(FieldValue.double(-3.0))
        #expect(c.strings == ["0", "7", "10", "99", "-1", "-120", "1700000000123", "9223372036854775807", "-9223372036854775808",
                              "0-1", "18446744073709551615-42", "18446744073709551615", "-3"])
    }

    @Test func floatsWrittenInPlaceReadBackExactly() {
        var values: [Double] = [0.5, -0.5, 12.375, 0.875, 0.1, 0.2, 0.1 + 0.2, 1.0 / 3, 99.99, 0.0001, 0.00011, 0.00009,
                                123456789.5, 999999999.123456, 1e9 + 0.5, 2.5e-7, -1234.5678, 1e300, -Double.pi,
                                .infinity, -.infinity, .nan, 3, -7, 1e16, 0]
        // A deterministic spread of values with few decimals, as metrics have, and of arbitrary ones.
        var x: UInt64 = 0x9E3779B97F4A7C15
        for _ in 0..<20_000 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let cents = Double(Int64(bitPattern: x >> 20) % 10_000_000) / 100
            let any = Double(bitPattern: (x >> 2) | 0x3FF0000000000000) * Double(x % 1000)
            values += [cents, -cents / 8, any]
        }
        for d in values {
            var c = RedisCommand()
            c.append(double: d)
            let text = c.strings[0]
            if d.isNaN {
                #expect(Double(text)?.isNaN == true, "\(text)")
                continue
            }
            #expect(Double(text) == d, "\(d) written as \(text)")
            // The same text as the String-making path (line protocol, status): shortest, fixed.
            #expect(text == LineProtocol.formatDouble(d), "\(d): \(text), formatDouble \(LineProtocol.formatDouble(d))")
        }
        // Fixed decimals exactly as `description` writes them.
        var c = RedisCommand()
        for d in [12.375, -0.5, 0.1, 99.99, 0.0001, 123456789.5] { c.append(double: d) }
        #expect(c.strings == ["12.375", "-0.5", "0.1", "99.99", "0.0001", "123456789.5"])
    }

    @Test func integersWrittenInPlaceAsDigits() {
        var ints: [Int64] = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 12345, 1_700_000_000_123, .max, .min, -1, -10, -100]
        var p: Int64 = 1
        for _ in 0..<18 {
            p *= 10
            ints += [p - 1, p, p + 1, -p]
        }
        var c = RedisCommand()
        for v in ints { c.append(v) }
        #expect(c.strings == ints.map { String($0) })
        var u = RedisCommand()
        let uints: [UInt64] = [0, 7, 10_000_000_000_000_000_000, 9_999_999_999_999_999_999, .max]
        for v in uints { u.append(FieldValue.uint(v)) }
        u.append(StreamID(ms: 1_700_000_000_123, seq: 0))
        u.append(StreamID(ms: .max, seq: 99))
        #expect(u.strings == uints.map { String($0) } + ["1700000000123-0", "\(UInt64.max)-99"])
    }

    @Test func streamCommandIsExact() throws {
        var config = RedisOutputConfig()
        config.maxlen = 500
        var encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: config.maxlen)], minter: try StreamIDMinter(path: nil))
        let r = Record(name: "mem", tags: [Tag("host", "h1"), Tag("dc", "eu")],
                       fields: [Field("used", .uint(42)), Field("pct", .double(0.5)), Field("ok", .bool(true)), Field("s", .string("a b"))],
                       timestamp: 1_700_000_000_123_456_789)
        let batch = encoder.encode([QueuedRecord(record: r, route: 0), QueuedRecord(record: r, route: 0)], now: 0)
        #expect(batch.commands.map(\.command.strings) == [
            ["XADD", "metrics:h1:mem", "MAXLEN", "~", "500", "1700000000123-0", "used", "42", "pct", "0.5", "ok", "true", "s", "a b",
             "tag_dc", "eu", "tag_host", "h1", "timestamp", "1700000000123"],
            ["XADD", "metrics:h1:mem", "MAXLEN", "~", "500", "1700000000123-1", "used", "42", "pct", "0.5", "ok", "true", "s", "a b",
             "tag_dc", "eu", "tag_host", "h1", "timestamp", "1700000000123"],
        ])
    }

    @Test func trimByAgeAndAutoIDs() throws {
        var config = RedisOutputConfig()
        config.maxAge = 3_600_000_000_000
        config.ids = .auto
        var encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: 0)], minter: try StreamIDMinter(path: nil))
        let r = Record(name: "m", tags: [Tag("host", "h")], fields: [Field("v", .int(1))], timestamp: 5_000_000_000_000_000)
        let c = encoder.encode([QueuedRecord(record: r, route: 0)], now: 5_000_000_000_000_000).commands[0].command.strings
        #expect(c.prefix(6) == ["XADD", "metrics:h:m", "MINID", "~", "\(5_000_000_000 - 3_600_000)", "*"])
    }

    @Test func seriesKeysAndLabels() throws {
        var config = RedisOutputConfig()
        config.format = .timeseries
        config.key = try KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
        config.retentionMs = 86_400_000
        config.rollups = [RedisOutputConfig.Rollup.parse("avg:1m:1d")!]
        var encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: 0)], minter: try StreamIDMinter(path: nil))
        let r = Record(name: "cpu", tags: [Tag("host", "web-1"), Tag("cpu", "cpu0")],
                       fields: [Field("usage_user", .double(12.5)), Field("note", .string("x"))], timestamp: 60_000_000_000)
        let batch = encoder.encode([QueuedRecord(record: r, route: 0)], now: 0)
        #expect(batch.skippedFields == 1)
        #expect(batch.commands.map(\.command.strings) == [
            ["TS.CREATE", "ts:web-1:cpu:usage_user:cpu=cpu0", "RETENTION", "86400000", "DUPLICATE_POLICY", "LAST",
             "LABELS", "name", "cpu", "field", "usage_user", "cpu", "cpu0", "host", "web-1"],
            ["TS.CREATE", "ts:web-1:cpu:usage_user:cpu=cpu0:avg_1m", "RETENTION", "86400000", "DUPLICATE_POLICY", "LAST",
             "LABELS", "name", "cpu", "field", "usage_user", "cpu", "cpu0", "host", "web-1", "rollup", "avg_1m"],
            ["TS.CREATERULE", "ts:web-1:cpu:usage_user:cpu=cpu0", "ts:web-1:cpu:usage_user:cpu=cpu0:avg_1m", "AGGREGATION", "avg", "60000"],
            ["TS.MADD", "ts:web-1:cpu:usage_user:cpu=cpu0", "60000", "12.5"],
        ])
    }

    /// Once every series of a record's shape is known to exist, records of that shape are written in
    /// one pass: the same TS.MADD as the per-series path, and a new series still gets its TS.CREATE.
    @Test func seriesOfKnownShapesAreWrittenAsBefore() throws {
        var config = RedisOutputConfig()
        config.format = .timeseries
        config.key = try KeyTemplate("ts:{field}:{host}:{name}:{field}", allowField: true)
        var encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: 0)], minter: try StreamIDMinter(path: nil))
        func records(_ cpus: [String]) -> [QueuedRecord] {
            cpus.enumerated().map { i, cpu in
                QueuedRecord(record: Record(name: "cpu", tags: [Tag("host", "h"), Tag("cpu", cpu)],
                                            fields: [Field("user", .double(1.5 + Double(i))), Field("note", .string("x")), Field("idle", .int(7))],
                                            timestamp: 60_000_000_000), route: 0)
            }
        }
        func madd(_ b: EncodedBatch) -> [String] { b.commands.filter { $0.command.name == "TS.MADD" }.flatMap(\.command.strings) }
        let first = encoder.encode(records(["cpu0", "cpu1"]), now: 0)
        #expect(first.commands.filter { $0.role == .setup }.count == 4)
        for c in first.commands where c.role == .setup { encoder.seriesCreated(c.key) }
        let second = encoder.encode(records(["cpu0", "cpu1"]), now: 0)  // per series; learns the shapes
        let third = encoder.encode(records(["cpu0", "cpu1"]), now: 0)   // one pass per record
        let expected = ["TS.MADD", "ts:user:h:cpu:user:cpu=cpu0", "60000", "1.5", "ts:idle:h:cpu:idle:cpu=cpu0", "60000", "7",
                        "ts:user:h:cpu:user:cpu=cpu1", "60000", "2.5", "ts:idle:h:cpu:idle:cpu=cpu1", "60000", "7"]
        #expect(madd(first) == expected && madd(second) == expected && madd(third) == expected)
        #expect(second.commandCount == 1 && third.commandCount == 1)
        #expect(third.skippedFields == 2 && third.rejectedAtEncoding == 0)
        #expect(third.commands[0].role == .samples(owners: [0, 0, 1, 1]))
        // A record of a new shape (another cpu) gets its series created, the known ones do not.
        let fourth = encoder.encode(records(["cpu0", "cpu2"]), now: 0)
        #expect(fourth.commands.filter { $0.role == .setup }.map { String(decoding: $0.key, as: UTF8.self) }
                == ["ts:user:h:cpu:user:cpu=cpu2", "ts:idle:h:cpu:idle:cpu=cpu2"])
    }

    @Test func replyClassification() {
        #expect(ReplyErrorKind.classify("LOADING Redis is loading the dataset in memory") == .transient)
        #expect(ReplyErrorKind.classify("OOM command not allowed when used memory > 'maxmemory'.") == .transient)
        #expect(ReplyErrorKind.classify("READONLY You can't write against a read only replica.") == .transient)
        #expect(ReplyErrorKind.classify("BUSY Redis is busy running a script.") == .transient)
        #expect(ReplyErrorKind.classify("MASTERDOWN Link with MASTER is down") == .transient)
        #expect(ReplyErrorKind.classify("TRYAGAIN Multiple keys request during rehashing of slot") == .transient)
        #expect(ReplyErrorKind.classify("CLUSTERDOWN The cluster is down") == .transient)
        #expect(ReplyErrorKind.classify("ERR The ID specified in XADD is equal or smaller than the target stream top item") == .duplicate)
        #expect(ReplyErrorKind.classify("WRONGTYPE Operation against a key holding the wrong kind of value") == .permanent)
        #expect(ReplyErrorKind.classify("ERR unknown command 'TS.MADD', with args beginning with: ") == .permanent)
        #expect(ReplyErrorKind.classify("ERR syntax error") == .permanent)
        #expect(ReplyErrorKind.classify("NOAUTH Authentication required.") == .credentials)
        #expect(ReplyErrorKind.classify("WRONGPASS invalid username-password pair or user is disabled.") == .credentials)
        #expect(ReplyErrorKind.classify("NOPERM User writer has no permissions to run the 'xadd' command") == .credentials)
        #expect(ReplyErrorKind.classify("ERR Protocol error: unauthenticated multibulk length") == .credentials)
        #expect(ReplyErrorKind.classify("ERR Protocol error: unauthenticated bulk length") == .credentials)
    }
}
