import RedisSink
import SpillwayBatch
import SpillwayAggregate
import SpillwayConfig
import SpillwayCore
import Testing

@Suite struct ExactSums {
    func fsum(_ values: [Double]) -> Double {
        var s = ExactSum()
        for v in values { s.add(v) }
        return s.value
    }

    /// Python's math.fsum test cases: the exact sum, rounded once (ties to even).
    @Test func knownSums() {
        #expect(fsum([]) == 0)
        #expect(fsum([1e16, 1.0, -1e16]) == 1.0)
        #expect(fsum(Array(repeating: 0.1, count: 10)) == 1.0)
        #expect(fsum([1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]) == 1e-100)
        #expect(fsum([0x1p53, -0.5, -0x1p-54]) == 0x1p53 - 1.0)
        #expect(fsum([1.0, 1e100, 1.0, -1e100]) == 2.0)
        // Ties: 2^53 + 1 rounds to even (2^53); anything above the tie rounds up.
        #expect(fsum([0x1p53, 1.0]) == 0x1p53)
        #expect(fsum([0x1p53, 1.0, 0x1p-100]) == 0x1p53 + 2)
        #expect(fsum([0x1p53, 1.0, -0x1p-100]) == 0x1p53)
        #expect(fsum([0.3, -0.1, -0.2]) == -2.7755575615628914e-17)
        // Overflow and specials are kept as a plain sum gives them.
        #expect(fsum([1.7e308, 1.7e308]) == .infinity)
        #expect(fsum([.infinity, 1]) == .infinity)
        #expect(fsum([.infinity, -.infinity]).isNaN)
    }

    /// Split any way and merged in any order, the sum is the same double.
    @Test func orderAndSplitDoNotChangeTheSum() {
        var rng = SplitMix(seed: 42)
        for round in 0..<200 {
            let n = Int(rng.next() % 200) + 1
            let values: [Double] = (0..<n).map { _ in
                let mantissa = Double(Int64(bitPattern: rng.next()) >> 11)
                return mantissa * Double(sign: .plus, exponent: Int(rng.next() % 80) - 100, significand: 1)
            }
            let whole = fsum(values)
            var shuffled = values
            for i in shuffled.indices.reversed() { shuffled.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            var parts: [ExactSum] = [ExactSum(), ExactSum(), ExactSum()]
            for v in shuffled { parts[Int(rng.next() % 3)].add(v) }
            var merged = ExactSum()
            for p in parts.reversed() { merged.add(p) }
            #expect(merged.value == whole, "round \(round)")
            #expect(ExactSum(partials: merged.partials).value == whole)
        }
    }
}

@Suite struct BucketStatsForm {
    func sample() -> BucketStats {
        var s = BucketStats()
        s.add(tags: [Tag("cpu", "cpu0"), Tag("host", "h")], field: "usage_user", value: 1.5)
        s.add(tags: [Tag("cpu", "cpu0"), Tag("host", "h")], field: "usage_user", value: -2.25)
        s.add(tags: [Tag("cpu", "cpu0"), Tag("host", "h")], field: "usage_idle", value: 1e16)
        s.add(tags: [Tag("cpu", "cpu0"), Tag("host", "h")], field: "usage_idle", value: 1)
        s.add(tags: [Tag("host", "h")], field: "ü", value: 0)
        return s
    }

    @Test func encodesAndDecodesExactly() throws {
        let s = sample()
        let decoded = try #require(BucketStats.decode(s.encoded()))
        #expect(decoded == s)
        #expect(decoded.encoded() == s.encoded())
        let user = try #require(decoded.series[[Tag("cpu", "cpu0"), Tag("host", "h")]]?["usage_user"])
        #expect(user.count == 2 && user.min == -2.25 && user.max == 1.5 && user.sum.value == -0.75 && user.avg == -0.375)
        let idle = try #require(decoded.series[[Tag("cpu", "cpu0"), Tag("host", "h")]]?["usage_idle"])
        #expect(idle.sum.partials.count == 2)
        #expect(BucketStats.decode(BucketStats().encoded()) == BucketStats())
    }

    @Test func refusesWhatIsNotItsForm() {
        let bytes = sample().encoded()
        #expect(BucketStats.decode(Array(bytes.dropLast())) == nil)
        #expect(BucketStats.decode(bytes + [0]) == nil)
        #expect(BucketStats.decode(Array("SWA2".utf8) + bytes.dropFirst(4)) == nil)
        #expect(BucketStats.decode([]) == nil)
        #expect(BucketStats.decode(Array("hello world".utf8)) == nil)
    }

    @Test func mergingPartsGivesTheWhole() {
        var rng = SplitMix(seed: 3)
        var whole = BucketStats()
        var parts = [BucketStats(), BucketStats(), BucketStats(), BucketStats()]
        for _ in 0..<2000 {
            let tags = [Tag("cpu", "cpu\(rng.next() % 3)")]
            let field = ["a", "b"][Int(rng.next() % 2)]
            let v = Double(Int64(bitPattern: rng.next()) >> 20) / 1000
            whole.add(tags: tags, field: field, value: v)
            parts[Int(rng.next() % 4)].add(tags: tags, field: field, value: v)
        }
        var merged = BucketStats()
        for p in parts { merged.merge(BucketStats.decode(p.encoded())!) }
        #expect(merged.series.keys.count == whole.series.keys.count)
        for (tags, fields) in whole.series {
            for (f, w) in fields {
                let m = merged.series[tags]![f]!
                #expect(m.count == w.count && m.min == w.min && m.max == w.max && m.sum.value == w.sum.value && m.avg == w.avg)
            }
        }
    }
}

@Suite struct StreamEntries {
    func entry(_ id: String, _ pairs: [String]?) -> RedisReply {
        .array([.bulk(Array(id.utf8)), pairs.map { .array($0.map { .bulk(Array($0.utf8)) }) } ?? .null])
    }

    @Test func readsTheAgentsLayout() throws {
        let e = try #require(StreamEntry(reply: entry("1795305776000-0", [
            "usage_user", "0", "usage_idle", "99.49748743718592", "state", "ok", "online", "true", "big", "18446744073709551615",
            "tag_host", "web-1", "tag_cpu", "cpu-total", "timestamp", "1795305775999",
        ])))
        #expect(e.id == StreamID(ms: 1795305776000, seq: 0))
        #expect(e.timestampMs == 1795305775999)
        #expect(e.tags == [Tag("cpu", "cpu-total"), Tag("host", "web-1")])
        #expect(e.values.map(\.field) == ["usage_user", "usage_idle", "big"])
        #expect(e.values.map(\.value) == [0, 99.49748743718592, 18446744073709551616])
        #expect(!e.deleted)
    }

    @Test func aFieldNamedTimestampBeforeTheAgentsIsAField() throws {
        let e = try #require(StreamEntry(reply: entry("5-1", ["timestamp", "42", "tag_host", "h", "timestamp", "7"])))
        #expect(e.timestampMs == 7)
        #expect(e.values.map(\.field) == ["timestamp"] && e.values.map(\.value) == [42])
        // No timestamp field: the ID's millisecond.
        #expect(StreamEntry(reply: entry("5-1", ["x", "1"]))?.timestampMs == 5)
    }

    @Test func aDeletedEntryHasNoFields() throws {
        let e = try #require(StreamEntry(reply: entry("9-0", nil)))
        #expect(e.deleted && e.values.isEmpty)
        #expect(StreamEntry(reply: .bulk([1])) == nil)
        #expect(StreamEntry(reply: entry("nope", [])) == nil)
    }

    @Test(arguments: [
        ("0", 0.0), ("-12", -12), ("0.5", 0.5), ("1e-05", 1e-05), ("3.0000000000000004E-1", 0.30000000000000004), ("+7", 7), (".5", 0.5), ("5.", 5),
    ] as [(String, Double)])
    func numbers(_ text: String, _ value: Double) {
        #expect(StreamEntry.number(Array(text.utf8)) == value)
    }

    @Test(arguments: ["", "-", "true", "inf", "-inf", "nan", "0x10", "1.2.3", "1e", "1e+", "12abc", " 1", "1 ", "1e999", "e5", "."])
    func notNumbers(_ text: String) {
        #expect(StreamEntry.number(Array(text.utf8)) == nil)
    }

    @Test func bucketsStartAtMultiplesOfTheirLength() {
        #expect(bucketStart(1795305776123, 60_000) == 1795305720000)
        #expect(bucketStart(60_000, 60_000) == 60_000)
        #expect(bucketStart(59_999, 60_000) == 0)
        #expect(bucketStart(-1, 60_000) == -60_000)
        #expect(bucketStart(-60_000, 60_000) == -60_000)
    }
}

@Suite struct AggregateKeys {
    @Test func streamKeysAreReadBack() throws {
        let t = try KeyTemplate("metrics:{host}:{name}")
        #expect(StreamInfo(key: "metrics:web-1:cpu", template: t) == StreamInfo(key: "metrics:web-1:cpu", name: "cpu", host: "web-1"))
        #expect(StreamInfo(key: "metrics:web-1:a:b", template: t)?.name == "a:b")
        #expect(StreamInfo(key: "metrics:web-1", template: t) == nil)
        #expect(StreamInfo(key: "other:web-1:cpu", template: t) == nil)
        let tagged = try KeyTemplate("m/{tag.dc}/{name}.s")
        #expect(tagged.match("m/eu-1/mem.s") == ["tag.dc": "eu-1", "name": "mem"])
        #expect(tagged.match("m/eu-1/mem.x") == nil)
        #expect(AggregateConfig.pattern(of: t) == "metrics:*:*")
        #expect(AggregateConfig.pattern(of: try KeyTemplate("a*[b]:{host}{name}")) == "a\\*\\[b\\]:*")
    }

    @Test func seriesKeysAndLabels() throws {
        let keys = SeriesKeys(template: try AggregateKeyTemplate(AggregateKeyTemplate.defaultText))
        let stream = StreamInfo(key: "metrics:web-1:cpu", name: "cpu", host: "web-1")
        let bucket = AggregateConfig.Bucket(ms: 60_000, text: "1m", retentionMs: 0)
        let tags = [Tag("cpu", "cpu0"), Tag("dc", "eu-1"), Tag("host", "web-1")]
        #expect(keys.key(stream, tags: tags, field: "usage_user", agg: .avg, bucket: bucket) == "agg:web-1:cpu:usage_user:avg:1m:cpu=cpu0:dc=eu-1")
        // No host tag: the stream key's.
        #expect(keys.key(stream, tags: [], field: "f", agg: .count, bucket: bucket) == "agg:web-1:cpu:f:count:1m")
        let custom = SeriesKeys(template: try AggregateKeyTemplate("{name}/{tag.dc}/{field}.{agg}.{bucket}"))
        #expect(custom.key(stream, tags: tags, field: "u", agg: .max, bucket: bucket) == "cpu/eu-1/u.max.1m:cpu=cpu0:host=web-1")
        var c = RedisCommand()
        keys.appendLabels(stream, tags: [Tag("agg", "x"), Tag("cpu", "cpu0")], field: "u", agg: .sum, bucket: bucket, to: &c)
        #expect(String(decoding: c.bytes, as: UTF8.self).split(separator: "\r\n").enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
                == ["LABELS", "name", "cpu", "field", "u", "agg", "sum", "bucket", "1m", "bucket_ms", "60000", "rollup", "sum_1m",
                    "spillway", "aggregate", "host", "web-1", "tag_agg", "x", "cpu", "cpu0"])
    }

    @Test func templateErrors() {
        #expect(throws: AggregateKeyTemplate.SyntaxError.self) { try AggregateKeyTemplate("agg:{nope}") }
        #expect(throws: AggregateKeyTemplate.SyntaxError.self) { try AggregateKeyTemplate("agg:{field") }
        #expect(throws: AggregateKeyTemplate.SyntaxError.self) { try AggregateKeyTemplate("") }
    }
}
