import Foundation
import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import SpillwayTestSupport
import Testing

@Suite struct Streams {
    @Test func recordsLandWithKeysIDsFieldsAndOrder() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig(server.url))
        var records: [Record] = []
        for i in 0..<50 {
            records.append(cpuRecord(cpu: "cpu\(i % 2)", ms: 1_700_000_000_000 + Int64(i / 4), base: Double(i)))
        }
        records.append(cpuRecord(host: "web-2", ms: 1_700_000_000_000))
        let counters = try deliver(writer, records)
        #expect(counters.written == 51 && counters.duplicates == 0 && counters.rejected == 0)
        #expect(try server.cli(["KEYS", "*"]).split(separator: "\n").sorted() == ["metrics:web-1:cpu", "metrics:web-2:cpu"])
        let entries = try xrange(server, "metrics:web-1:cpu")
        #expect(entries.count == 50)
        // IDs: the record's millisecond, the sequence counting up within it; production order kept.
        #expect(entries[0].0 == "1700000000000-0")
        #expect(entries[3].0 == "1700000000000-3")
        #expect(entries[4].0 == "1700000000001-0")
        for (i, (_, fields)) in entries.enumerated() {
            #expect(fields["usage_user"] == LineProtocol.formatDouble(Double(i)))
            #expect(fields["usage_active"] == LineProtocol.formatDouble(Double(i) + 2.5))
            #expect(fields["tag_cpu"] == "cpu\(i % 2)" && fields["tag_host"] == "web-1" && fields["tag_dc"] == "eu-1")
            #expect(fields["timestamp"] == "\(1_700_000_000_000 + Int64(i / 4))")
            #expect(fields.count == 11 + 3 + 1)
        }
    }

    @Test func sameBatchTwiceLeavesOneCopy() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig(server.url))
        let batch = try writer.encode((0..<20).map { QueuedRecord(record: cpuRecord(ms: 1_000 + Int64($0)), route: 0) }, now: 0)
        let first = send(writer, batch).counters
        let second = send(writer, batch).counters
        #expect(first.written == 20 && first.duplicates == 0)
        #expect(second.written == 0 && second.duplicates == 20)
        #expect(try server.cli(["XLEN", "metrics:web-1:cpu"]) == "20")
    }

    @Test func wrongTypeOnOneKeyDoesNotStopTheOthers() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        try server.cli(["SET", "metrics:bad:cpu", "a string"])
        let writer = try makeWriter(try outputConfig(server.url))
        let records = [cpuRecord(host: "good", ms: 1), cpuRecord(host: "bad", ms: 1), cpuRecord(host: "good", ms: 2), cpuRecord(host: "bad", ms: 3)]
        let counters = try deliver(writer, records)
        #expect(counters.written == 2 && counters.rejected == 2 && counters.duplicates == 0)
        #expect(try server.cli(["XLEN", "metrics:good:cpu"]) == "2")
        #expect(try server.cli(["GET", "metrics:bad:cpu"]) == "a string")
    }

    @Test func aclUserAndWrongPassword() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        #expect(try server.cli(["ACL", "SETUSER", "spill", "on", ">s3cret", "~metrics:*", "+@all"]) == "OK")
        #expect(try server.cli(["CONFIG", "SET", "requirepass", "adminpw"]) == "OK")
        let ok = try makeWriter(try outputConfig("redis://spill:s3cret@127.0.0.1:\(server.port)/0"))
        #expect(try deliver(ok, [cpuRecord(ms: 5)]).written == 1)
        #expect(try server.cli(["XLEN", "metrics:web-1:cpu"], auth: ["--user", "spill", "--pass", "s3cret"]) == "1")
        // A refused AUTH is an authentication error, never an unauthenticated connection.
        let bad = RedisConnection(options: RedisConnectionOptions(endpoint: try RedisEndpoint.parse("redis://spill:wrong@127.0.0.1:\(server.port)/0")))
        #expect(throws: RedisError.self) { try bad.connect() }
        do {
            try bad.connect()
        } catch {
            guard case .authentication(let message) = error else { Issue.record("expected an authentication error, got \(error)"); return }
            #expect(message.contains("AUTH refused"))
        }
        #expect(!bad.isConnected)
        // The plain password of the default user works too.
        let plain = try makeWriter(try outputConfig("redis://:adminpw@127.0.0.1:\(server.port)/0"))
        #expect(try deliver(plain, [cpuRecord(host: "web-9", ms: 5)]).written == 1)
        // NOPERM (the ACL user may not write outside metrics:*) is the ACL's failure, not the
        // record's: it stays pending, and is written once the ACL allows it.
        var cfg = try outputConfig("redis://spill:s3cret@127.0.0.1:\(server.port)/0")
        cfg.key = try KeyTemplate("other:{host}")
        let denied = try makeWriter(cfg)
        let batch = try denied.encode([cpuRecord(ms: 6)].map { QueuedRecord(record: $0, route: 0) }, now: wallClockNanoseconds())
        var refused = PendingBatch(batch)
        let (refusedCounters, refusal) = denied.attempt(&refused)
        #expect(refusedCounters.rejected == 0 && refusedCounters.written == 0)
        #expect(refusal?.hasPrefix("NOPERM") == true, "\(refusal ?? "nil")")
        #expect(refused.moved.count == 1)
        let admin = ["--user", "default", "--pass", "adminpw"]
        #expect(try server.cli(["ACL", "SETUSER", "spill", "~other:*"], auth: admin) == "OK")
        let again = denied.encoder.ids.withMinter { EncodedBatch.reminting([refused.takeMoved() ?? EncodedBatch()], minter: &$0) }.batch
        let sent = send(denied, again)
        #expect(sent.error == nil && sent.counters.written == 1)
        #expect(try server.cli(["XLEN", "other:web-1"], auth: admin) == "1")
    }

    @Test func unixSocketAndSelectedDatabase() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig("unix://\(server.unixSocket)?db=3"))
        #expect(try deliver(writer, [cpuRecord(ms: 7)]).written == 1)
        #expect(try server.cli(["-n", "3", "XLEN", "metrics:web-1:cpu"]) == "1")
        #expect(try server.cli(["-n", "0", "EXISTS", "metrics:web-1:cpu"]) == "0")
        let tcp = try makeWriter(try outputConfig("redis://127.0.0.1:\(server.port)/5"))
        #expect(try deliver(tcp, [cpuRecord(ms: 8)]).written == 1)
        #expect(try server.cli(["-n", "5", "XLEN", "metrics:web-1:cpu"]) == "1")
    }

    @Test func maxlenTrimsApproximately() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig(server.url) { $0.maxlen = 100 })
        try deliver(writer, (0..<1000).map { cpuRecord(ms: Int64($0)) })
        let length = Int(try server.cli(["XLEN", "metrics:web-1:cpu"]))!
        #expect(length >= 100 && length < 1000)
        #expect(try xrange(server, "metrics:web-1:cpu").last?.0 == "999-0")
    }

    /// A writer, two batches of 3 records of one stream (IDs minted in that order), a seed entry
    /// below them, and Redis refusing every write (maxmemory 1, noeviction) until it is lifted.
    func twoBatchesAndNoMemory(_ server: RedisServer) throws -> (RedisWriter, EncodedBatch, EncodedBatch) {
        let writer = try makeWriter(try outputConfig(server.url))
        let first = try writer.encode((0..<3).map { QueuedRecord(record: cpuRecord(ms: 1000 + Int64($0)), route: 0) }, now: wallClockNanoseconds())
        let second = try writer.encode((3..<6).map { QueuedRecord(record: cpuRecord(ms: 1000 + Int64($0)), route: 0) }, now: wallClockNanoseconds())
        _ = try server.cli(["XADD", "metrics:web-1:cpu", "1-0", "seed", "1"])
        #expect(try server.cli(["CONFIG", "SET", "maxmemory-policy", "noeviction"]) == "OK")
        #expect(try server.cli(["CONFIG", "SET", "maxmemory", "1"]) == "OK")
        return (writer, first, second)
    }

    /// Redis refuses a batch (OOM) and takes the batch behind it once its memory is back: the
    /// refused records' IDs are then below the stream's top. They are moved out of their batch and
    /// given new IDs ahead of the next batch's records, so they are written, not taken for
    /// duplicates (before: 3 "duplicates", 3 records lost).
    @Test func recordsRefusedBeforeLaterOnesAreAcceptedGetNewIDs() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let (writer, first, second) = try twoBatchesAndNoMemory(server)
        var a = PendingBatch(first)
        let (refusedCounters, error) = writer.attempt(&a)
        #expect(error?.hasPrefix("OOM") == true, "\(error ?? "nil")")
        #expect(refusedCounters.written == 0 && refusedCounters.duplicates == 0)
        // Surely not written: moved out of the batch, which is then settled.
        #expect(a.isComplete && a.moved.count == 3)
        #expect(try server.cli(["CONFIG", "SET", "maxmemory", "0"]) == "OK")
        #expect(send(writer, second).counters.written == 3)
        let taken = a.takeMoved()
        #expect(taken?.recordCount == 3 && a.moved.isEmpty)
        let moved = taken ?? EncodedBatch()
        let (reminted, count) = writer.encoder.ids.withMinter { EncodedBatch.reminting([moved], minter: &$0) }
        #expect(count == 3)
        let next = try writer.encode([QueuedRecord(record: cpuRecord(ms: 1006), route: 0)], now: wallClockNanoseconds()).after(reminted)
        #expect(next.recordCount == 4)
        let sent = send(writer, next)
        #expect(sent.error == nil && sent.counters.written == 4 && sent.counters.duplicates == 0, "\(sent.counters)")
        let entries = try xrange(server, "metrics:web-1:cpu").dropFirst()
        // Every record once; the refused ones after those Redis took meanwhile, their time kept.
        #expect(entries.map { $0.1["timestamp"] ?? "" } == ["1003", "1004", "1005", "1000", "1001", "1002", "1006"])
        let ids = entries.compactMap { StreamID($0.0) }
        #expect(ids.count == 7 && zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
    }

    /// A pipeline never overtakes an earlier one that could not be sent: Redis comes back between
    /// two sends, and the second fails too until the first's failure is read (else its records
    /// would be written first, and the first's explicit IDs end up below the stream's top).
    @Test func aPipelineNeverOvertakesOneThatWasNotSent() throws {
        let port = try RedisServer.freePort()
        let connection = RedisConnection(options: RedisConnectionOptions(endpoint: try RedisEndpoint.parse("redis://127.0.0.1:\(port)/0")))
        let first = connection.send([RedisCommand(["XADD", "s", "5-0", "f", "1"])])
        #expect(first.error != nil)
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        let second = connection.send([RedisCommand(["XADD", "s", "6-0", "f", "2"])])
        #expect(second.error != nil, "the second pipeline went out ahead of the first")
        #expect(connection.receive(first, detail: .full).error != nil)
        #expect(connection.receive(second, detail: .full).error != nil)
        #expect(try server.cli(["EXISTS", "s"]) == "0")
        // Both failures read: the first goes out again, then the second, in order.
        #expect(connection.pipeline([RedisCommand(["XADD", "s", "5-0", "f", "1"])]).error == nil)
        #expect(connection.pipeline([RedisCommand(["XADD", "s", "6-0", "f", "2"])]).error == nil)
        #expect(try xrange(server, "s").map(\.0) == ["5-0", "6-0"])
    }

    /// Redis refuses a batch (OOM) whose replies are never read (the connection lost, or the agent
    /// killed), then takes the batch behind it: sent again, the refused records are answered "equal
    /// or smaller". Looked up, they are not in the stream: moved to get new IDs, not counted as
    /// duplicates (found in review: 3 records lost). A true duplicate still counts as one.
    @Test func aRefusalNeverReadIsFoundByItsDuplicateReply() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let (writer, first, second) = try twoBatchesAndNoMemory(server)
        var a = PendingBatch(first)
        let sentA = writer.begin(a)
        // Redis refuses A; its replies are never read.
        func rejectedCalls() -> Int {
            let info = (try? server.cli(["INFO", "commandstats"])) ?? ""
            let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_xadd:") } ?? ""
            let field = line.split(separator: ",").first { $0.hasPrefix("rejected_calls=") } ?? ""
            return Int(field.dropFirst("rejected_calls=".count)) ?? 0
        }
        for _ in 0..<100 where rejectedCalls() < 3 { usleep(20_000) }
        #expect(rejectedCalls() >= 3)
        _ = try server.cli(["CONFIG", "SET", "maxmemory", "0"])
        writer.connection.close()
        _ = writer.finish(&a, sentA)
        #expect(a.moved.isEmpty && !a.isComplete)
        #expect(send(writer, second).counters.written == 3)
        var rest = PendingBatch(a.remainder())
        let (counters, _) = writer.attempt(&rest)
        #expect(counters.duplicates == 0 && counters.written == 0, "\(counters)")
        #expect(rest.moved.count == 3 && rest.isComplete)
        let again = writer.encoder.ids.withMinter { EncodedBatch.reminting([rest.takeMoved() ?? EncodedBatch()], minter: &$0) }.batch
        #expect(send(writer, again).counters.written == 3)
        #expect(try server.cli(["XLEN", "metrics:web-1:cpu"]) == "7")
        // The second batch sent again: its records are there, true duplicates.
        let resent = send(writer, second)
        #expect(resent.counters.duplicates == 3 && resent.pending.moved.isEmpty && resent.pending.isComplete)
        #expect(try server.cli(["XLEN", "metrics:web-1:cpu"]) == "7")
    }

    @Test func refusedConnectionKeepsTheBatchUntilRedisIsBack() throws {
        let port = try RedisServer.freePort()
        let writer = try makeWriter(try outputConfig("redis://127.0.0.1:\(port)/0"))
        let batch = try writer.encode((0..<10).map { QueuedRecord(record: cpuRecord(ms: Int64($0)), route: 0) }, now: 0)
        var p = PendingBatch(batch)
        let (c1, e1) = writer.attempt(&p)
        #expect(c1 == WriteCounters())
        #expect(e1?.contains("connection error") == true)
        #expect(!p.isComplete)
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        let (c2, e2) = writer.attempt(&p)
        #expect(e2 == nil, "\(e2 ?? "")")
        #expect(c2.written == 10 && p.isComplete)
        #expect(try server.cli(["XLEN", "metrics:web-1:cpu"]) == "10")
    }

    @Test func timeoutAfterSendIsRetriedWithoutDuplicates() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig(server.url), timeout: 300_000_000)
        try deliver(writer, [cpuRecord(ms: 1)])  // connected
        // Redis stops answering for 1.5 s; what it received meanwhile is applied afterwards.
        #expect(try server.cli(["CLIENT", "PAUSE", "1500", "ALL"]) == "OK")
        let batch = try writer.encode((2..<12).map { QueuedRecord(record: cpuRecord(ms: Int64($0)), route: 0) }, now: 0)
        var p = PendingBatch(batch)
        let (_, e1) = writer.attempt(&p)
        #expect(e1?.contains("timeout") == true, "\(e1 ?? "nil")")
        usleep(1_600_000)
        var total = WriteCounters()
        for _ in 0..<5 where !p.isComplete {
            total += writer.attempt(&p).counters
        }
        #expect(p.isComplete)
        // Whether the paused server applied the first send (the resend then finds duplicates) or
        // dropped it with the closed connection (the resend writes them), each record is there once.
        #expect(total.written + total.duplicates == 10, "\(total)")
        #expect(try server.cli(["XLEN", "metrics:web-1:cpu"]) == "11")
        let ids = try xrange(server, "metrics:web-1:cpu").map(\.0)
        #expect(ids == ["1-0"] + (2..<12).map { "\($0)-0" })
    }

    @Test func twoBatchesOnTheWireAreSettledInOrder() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig(server.url))
        let a = try writer.encode((0..<300).map { QueuedRecord(record: cpuRecord(ms: Int64($0) + 1), route: 0) }, now: 0)
        let b = try writer.encode((300..<600).map { QueuedRecord(record: cpuRecord(ms: Int64($0) + 1), route: 0) }, now: 0)
        var pa = PendingBatch(a), pb = PendingBatch(b)
        // Both go out before either's replies are read.
        let sentA = writer.begin(pa)
        let sentB = writer.begin(pb)
        let (ca, ea) = writer.finish(&pa, sentA)
        let (cb, eb) = writer.finish(&pb, sentB)
        #expect(ea == nil && eb == nil, "\(ea ?? "") \(eb ?? "")")
        #expect(ca.written == 300 && cb.written == 300)
        #expect(pa.isComplete && pb.isComplete)
        #expect(try xrange(server, "metrics:web-1:cpu").map(\.0) == (1...600).map { "\($0)-0" })

        // The connection is lost with two batches on it: neither's replies are read (their
        // outcome is unknown), and sent again in order each record is there once.
        let c = try writer.encode((600..<900).map { QueuedRecord(record: cpuRecord(ms: Int64($0) + 1), route: 0) }, now: 0)
        let d = try writer.encode((900..<1200).map { QueuedRecord(record: cpuRecord(ms: Int64($0) + 1), route: 0) }, now: 0)
        var pc = PendingBatch(c), pd = PendingBatch(d)
        let sentC = writer.begin(pc)
        let sentD = writer.begin(pd)
        writer.connection.close()
        let (cc, ec) = writer.finish(&pc, sentC)
        let (cd, ed) = writer.finish(&pd, sentD)
        #expect(ec?.contains("lost before the replies") == true, "\(ec ?? "nil")")
        #expect(ed?.contains("lost before the replies") == true, "\(ed ?? "nil")")
        #expect(cc == WriteCounters() && cd == WriteCounters())
        #expect(!pc.isComplete && !pd.isComplete)
        let (rc, erc) = writer.attempt(&pc)
        let (rd, erd) = writer.attempt(&pd)
        #expect(erc == nil && erd == nil)
        #expect(rc.written + rc.duplicates == 300 && rd.written + rd.duplicates == 300, "\(rc) \(rd)")
        #expect(try xrange(server, "metrics:web-1:cpu").map(\.0) == (1...1200).map { "\($0)-0" })
    }

    @Test func oomIsTransient() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig(server.url))
        try server.cli(["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        try server.cli(["CONFIG", "SET", "maxmemory", "1"])
        let batch = try writer.encode((0..<5).map { QueuedRecord(record: cpuRecord(ms: Int64($0)), route: 0) }, now: 0)
        var p = PendingBatch(batch)
        let (c1, e1) = writer.attempt(&p)
        #expect(c1.written == 0 && c1.rejected == 0)
        #expect(e1?.hasPrefix("OOM") == true)
        // Surely not written: moved out, to go again with new IDs (see PendingBatch.moved).
        #expect(p.moved.count == 5)
        try server.cli(["CONFIG", "SET", "maxmemory", "0"])
        let moved = p.takeMoved() ?? EncodedBatch()
        let again = writer.encoder.ids.withMinter { EncodedBatch.reminting([moved], minter: &$0) }.batch
        let sent = send(writer, again)
        #expect(sent.error == nil && sent.counters.written == 5)
    }

    @Test func newRunNeverMintsBelowWhatRedisHas() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        try server.cli(["XADD", "metrics:web-1:cpu", "5000-3", "f", "v"])
        // No saved marks (a new data_dir): the stream's last ID is read from Redis first.
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let writer = try makeWriter(try outputConfig(server.url), statePath: dir + "/stream-ids")
        let counters = try deliver(writer, [cpuRecord(ms: 10), cpuRecord(ms: 6000)])
        #expect(counters.written == 2 && counters.duplicates == 0)
        #expect(try xrange(server, "metrics:web-1:cpu").map(\.0) == ["5000-3", "5000-4", "6000-0"])
    }
}

@Suite(.serialized) struct TimeSeries {
    @Test func seriesLabelsRollupsAndIdempotentReplay() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let config = try outputConfig(server.url) {
            $0.format = .timeseries
            $0.key = try! KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
            $0.retentionMs = 86_400_000
            $0.rollups = [RedisOutputConfig.Rollup.parse("avg:1m:1d")!, RedisOutputConfig.Rollup.parse("max:1h:30d")!]
        }
        let writer = try makeWriter(config)
        var records = (0..<4).map { cpuRecord(host: "web-1", cpu: "cpu\($0 % 2)", ms: 1_700_000_000_000 + Int64($0) * 1000, base: Double($0)) }
        records.append(Record(name: "log", tags: [Tag("host", "web-1")], fields: [Field("message", .string("hi"))], timestamp: 1_700_000_000_000_000_000))
        let batch = try writer.encode(records.map { QueuedRecord(record: $0, route: 0) }, now: 0)
        let first = send(writer, batch).counters
        #expect(first.written == 4 && first.rejected == 1 && first.skippedFields == 1)
        // One series per (name, field, tags): 11 fields x 2 cpus, plus 2 rollups each.
        #expect(try server.cli(["KEYS", "ts:*"]).split(separator: "\n").count == 22 * 3)
        let info = try server.cli(["TS.INFO", "ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1"])
        #expect(info.contains("duplicatePolicy\nlast") || info.contains("duplicatePolicy\nLAST"), "\(info)")
        #expect(info.contains("retentionTime\n86400000"))
        #expect(info.contains("ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1:avg_1m") && info.contains("ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1:max_1h"))
        let range = try server.cli(["TS.RANGE", "ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1", "-", "+"])
        #expect(range == "1700000000000\n0\n1700000002000\n2")
        // The query the README shows finds the data by labels.
        let mrange = try server.cli(["TS.MRANGE", "-", "+", "FILTER", "name=cpu", "field=usage_user", "host=web-1"])
        #expect(mrange.contains("ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1") && mrange.contains("ts:web-1:cpu:usage_user:cpu=cpu1"))
        // A replay (a new run, series existing) leaves the same data.
        let again = try makeWriter(config)
        let second = send(again, try again.encode(records.map { QueuedRecord(record: $0, route: 0) }, now: 0)).counters
        #expect(second.written == 4 && second.rejected == 1)
        #expect(try server.cli(["TS.RANGE", "ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1", "-", "+"]) == range)
    }

    /// A sample refused inside a TS.MADD rejects its record only; the other records of the same
    /// TS.MADD are written.
    @Test func aRefusedSampleRejectsOnlyItsRecord() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        try server.cli(["SET", "ts:web-1:cpu:usage_user:cpu=cpu1:dc=eu-1", "not a series"])
        let writer = try makeWriter(try outputConfig(server.url) {
            $0.format = .timeseries
            $0.key = try! KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
        })
        let records = (0..<4).map { cpuRecord(host: "web-1", cpu: "cpu\($0 % 2)", ms: 1_700_000_000_000 + Int64($0) * 1000, base: Double($0)) }
        let batch = try writer.encode(records.map { QueuedRecord(record: $0, route: 0) }, now: 0)
        #expect(batch.commands.filter { $0.command.name == "TS.MADD" }.count == 1)
        let counters = send(writer, batch).counters
        #expect(counters.written == 2 && counters.rejected == 2, "\(counters)")
        #expect(try server.cli(["TS.RANGE", "ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1", "-", "+"]) == "1700000000000\n0\n1700000002000\n2")
        #expect(try server.cli(["TS.RANGE", "ts:web-1:cpu:usage_system:cpu=cpu1:dc=eu-1", "-", "+"]).hasPrefix("1700000001000\n"))
    }

    /// Redis loses its data while the writer runs (a restart without persistence; FLUSHALL here):
    /// the samples of series created before find them gone. The series are created again, with
    /// their rollups' rules, before the samples are sent again: none is lost. Their labels come
    /// back with the next records, in this run or in a new one.
    @Test func seriesGoneFromRedisAreCreatedAgainAndNoSampleIsLost() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let config = try outputConfig(server.url) {
            $0.format = .timeseries
            $0.key = try! KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
            $0.rollups = [RedisOutputConfig.Rollup.parse("avg:1m:1d")!]
        }
        func records(_ from: Int) -> [QueuedRecord] {
            (from..<from + 4).map {
                QueuedRecord(record: cpuRecord(host: "web-1", cpu: "cpu\($0 % 2)", ms: 1_700_000_000_000 + Int64($0) * 1000, base: Double($0)), route: 0)
            }
        }
        let key = "ts:web-1:cpu:usage_user:cpu=cpu0:dc=eu-1"
        func byLabels() throws -> String { try server.cli(["TS.MRANGE", "-", "+", "FILTER", "name=cpu", "field=usage_user", "cpu=cpu0"]) }
        let writer = try makeWriter(config)
        #expect(send(writer, try writer.encode(records(0), now: 0)).counters.written == 4)
        try server.cli(["FLUSHALL"])
        // Encoded as for series that exist: TS.MADD only.
        let batch = try writer.encode(records(4), now: 0)
        #expect(batch.commands.allSatisfy { $0.command.name == "TS.MADD" })
        let (counters, pending, error) = send(writer, batch)
        #expect(error == nil && pending.isComplete)
        #expect(counters.written == 4 && counters.rejected == 0, "\(counters)")
        #expect(try server.cli(["TS.RANGE", key, "-", "+"]) == "1700000004000\n4\n1700000006000\n6")
        #expect(try server.cli(["TS.INFO", key]).contains("\(key):avg_1m"))
        #expect(try server.cli(["KEYS", "ts:*"]).split(separator: "\n").count == 22 * 2)
        #expect(try byLabels().isEmpty)
        // The next records send TS.CREATE again; it finds the series, so their labels are set
        // (ahead of the batch after).
        #expect(send(writer, try writer.encode(records(8), now: 0)).counters.written == 4)
        #expect(send(writer, try writer.encode(records(12), now: 0)).counters.written == 4)
        #expect(try byLabels().contains("1700000004000"))
        // The same in a new run: series created again bare by an earlier run get their labels.
        try server.cli(["FLUSHALL"])
        #expect(send(writer, try writer.encode(records(16), now: 0)).counters.written == 4)
        #expect(try byLabels().isEmpty)
        let next = try makeWriter(config)
        #expect(send(next, try next.encode(records(20), now: 0)).counters.written == 4)
        #expect(send(next, try next.encode(records(24), now: 0)).counters.written == 4)
        #expect(try byLabels().contains("1700000016000"))
        #expect(try server.cli(["TS.RANGE", key, "-", "+"]) == "1700000016000\n16\n1700000018000\n18\n1700000020000\n20\n1700000022000\n22\n1700000024000\n24\n1700000026000\n26")
    }

    @Test func withoutTheModuleRecordsAreRejected() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let writer = try makeWriter(try outputConfig(server.url) {
            $0.format = .timeseries
            $0.key = try! KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
        })
        let counters = try deliver(writer, [cpuRecord(ms: 1), cpuRecord(ms: 2)])
        #expect(counters.rejected == 2 && counters.written == 0)
    }
}

/// Replies are read into the connection's arena: every kind, nested, large, binary, and errors
/// (counted at any depth for the writer's errors-only reading).
@Suite struct Replies {
    /// A batch's commands go out straight from its bytes: adjacent ones as one run (short runs
    /// gathered, a long one written from where it is), the others each on their own; only the
    /// commands asked for, in order.
    @Test func chosenCommandsOfABatchGoOutAsTheyAre() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let connection = RedisConnection(options: RedisConnectionOptions(endpoint: try RedisEndpoint.parse(server.url)))
        var batch = EncodedBatch(recordCount: 3000)
        for i in 0..<3000 {
            // Some commands are large (a run of them is past the gathering size), most are small.
            let value = String(repeating: "v", count: i % 500 == 0 ? 40_000 : i % 50)
            batch.append(RedisCommand(["RPUSH", "l", "\(i):\(value.count)", value]), keyArgument: 1, role: .record(i))
        }
        let chosen = (0..<3000).filter { $0 % 7 != 3 && !(1000..<1400).contains($0) }
        let ticket = connection.send(batch, indices: chosen)
        let (replies, error) = connection.receive(ticket, detail: .full)
        #expect(error == nil && replies.count == chosen.count, "\(String(describing: error))")
        let list = try server.cli(["--raw", "LRANGE", "l", "0", "-1"]).split(separator: "\n", omittingEmptySubsequences: false)
        let names = stride(from: 0, to: list.count - 1, by: 2).map { String(list[$0]) }
        #expect(names == chosen.map { "\($0):\($0 % 500 == 0 ? 40_000 : $0 % 50)" })
    }

    @Test func everyKindOfReplyReadsBackAsSent() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let connection = RedisConnection(options: RedisConnectionOptions(endpoint: try RedisEndpoint.parse(server.url)))
        let big = [UInt8]((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        var setBig = RedisCommand()
        setBig.append("SET"); setBig.append("big"); setBig.append(bytes: big)
        var push = RedisCommand(["RPUSH", "list"])
        for i in 0..<20_000 { push.append("item-\(i)") }
        let commands = [
            RedisCommand(["SET", "k", "v"]), RedisCommand(["GET", "k"]), RedisCommand(["GET", "missing"]),
            RedisCommand(["INCRBY", "n", "-42"]), setBig, RedisCommand(["GET", "big"]), push,
            RedisCommand(["LRANGE", "list", "0", "-1"]), RedisCommand(["XADD", "s", "1-1", "f", "x"]),
            RedisCommand(["XRANGE", "s", "-", "+"]), RedisCommand(["INCR", "k"]),
            RedisCommand(["EVAL", "return {1, redis.error_reply('E1 inner'), {2, redis.error_reply('E2 deep')}}", "0"]),
        ]
        let (replies, error) = connection.pipeline(commands)
        #expect(error == nil)
        try #require(replies.count == commands.count)
        #expect(replies[0] == .status("OK"))
        #expect(replies[1] == .bulk(Array("v".utf8)))
        #expect(replies[2] == .null)
        #expect(replies[3] == .integer(-42))
        #expect(replies[5] == .bulk(big))
        #expect(replies[6] == .integer(20_000))
        #expect(replies[7].array?.count == 20_000 && replies[7].array?.last == .bulk(Array("item-19999".utf8)))
        #expect(replies[8] == .bulk(Array("1-1".utf8)))
        #expect(replies[9] == .array([.array([.bulk(Array("1-1".utf8)), .array([.bulk(Array("f".utf8)), .bulk(Array("x".utf8))])])]))
        #expect(replies[10].isError && replies[10].string?.hasPrefix("ERR value is not an integer") == true)
        #expect(replies[11] == .array([.integer(1), .error("E1 inner"), .array([.integer(2), .error("E2 deep")])]))
        // Errors only: what has no error anywhere is one plain value; errors keep their text, at any depth.
        let (light, _) = connection.pipeline(commands, detail: .errorsOnly)
        #expect(light[7] == .integer(0) && light[9] == .integer(0) && light[5] == .integer(0))
        #expect(light[10].isError)
        #expect(light[11] == .array([.integer(0), .error("E1 inner"), .array([.integer(0), .error("E2 deep")])]))
    }

    /// Reads wait for a good part of the replies still to come (the socket's low-water mark), but
    /// never for more than will come: with the smallest replies there are (3 bytes, "+\r\n"), two
    /// pipelines outstanding are read to their last reply, with no read left waiting until the
    /// socket timeout (3 s here: a read that waited for it would fail the pipeline; the 3,000 replies
    /// take a few milliseconds, and 1 s was once not enough for them on a loaded CI machine).
    @Test func readsNeverWaitForMoreThanTheRepliesStillToCome() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        var options = RedisConnectionOptions(endpoint: try RedisEndpoint.parse(server.url))
        options.timeout = 3_000_000_000
        let connection = RedisConnection(options: options)
        let smallest = RedisCommand(["EVAL", "return {ok=''}", "0"])
        let first = connection.send(Array(repeating: smallest, count: 2000))
        let second = connection.send(Array(repeating: smallest, count: 1000))
        let (a, errorA) = connection.receive(first, detail: .full)
        #expect(errorA == nil)
        #expect(a.count == 2000 && a.allSatisfy { $0 == .status("") })
        // Above the default, and no more than the 1,000 replies still to come take at the least.
        #expect(connection.receiveLowWater > 1 && connection.receiveLowWater <= 3 * 999)
        let (b, errorB) = connection.receive(second, detail: .full)
        #expect(errorB == nil)
        #expect(b.count == 1000 && b.allSatisfy { $0 == .status("") })
        #expect(connection.receiveLowWater == 1)
        // And the connection is still in step: a plain command after them.
        #expect(try connection.command(["PING"]) == .status("PONG"))
    }
}
