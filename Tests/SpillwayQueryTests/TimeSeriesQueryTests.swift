import SpillwayPromQL
import Foundation
import RedisSink
import SpillwayConfig
import SpillwayCore
@testable import SpillwayQuery
import SpillwayTestSupport
import Testing

/// The read layer against redis-stack (RedisTimeSeries), filled by the agent's writer with rollups:
/// every figure is checked against the raw samples TS.RANGE gives, aggregated by the test itself.
/// The clock is the query's `now` argument (the data sit at a fixed time in 2025).
@Suite struct TimeSeriesQueries {
    /// 2025-06-15T14:00:00Z, two hours of data (720 intervals of 10 s).
    static let data = Dataset(start: 1_749_996_000_000, count: 720)
    static let rollups = ["max:1m:1d", "max:5m:30d", "avg:1m:1d", "count:1m:1d", "min:2m:1h"]

    final class Rig {
        let server: RedisServer
        let redis: RedisConnection
        let config: RedisOutputConfig

        init() throws {
            server = try RedisServer(stack: true)
            config = try outputConfig(server.url, timeseries: true, rollups: TimeSeriesQueries.rollups)
            try fill(config, TimeSeriesQueries.data.records())
            redis = try connect(server.url)
        }

        func engine(_ limits: QueryLimits = QueryLimits()) -> QueryEngine {
            QueryEngine(redis: config, layout: QueryLayout(redis: config, inputKeys: []), limits: limits)
        }

        deinit {
            server.stop()
            server.removeFiles()
        }
    }

    @Test func seriesAreTheIndexsWithTheirLabels() throws {
        let rig = try Rig()
        let engine = rig.engine()
        let all = try engine.series(Selector(name: "cpu"))
        // 2 hosts × 2 cpus × 2 fields, no rollup among them; what TS.QUERYINDEX gives.
        #expect(all.map(\.key).sorted() == (try tsKeys(rig.redis, ["name=cpu", "rollup="])))
        #expect(all.count == 8)
        let first = try #require(all.first)
        #expect(first.labels == ["name": "cpu", "field": "usage_system", "cpu": "cpu-total", "host": "web-1"])
        #expect(first.key == "ts:web-1:cpu:usage_system:cpu=cpu-total")

        let web1 = try engine.series(Selector(name: "cpu", [try .parse("host=web-1")]))
        #expect(web1.map(\.key).sorted() == (try tsKeys(rig.redis, ["name=cpu", "host=web-1", "rollup="])))
        // Matchers Redis cannot apply are applied to the labels read back.
        let cpu0 = try engine.series(Selector(name: "cpu", [try .parse("cpu=~cpu[0-9]+"), try .parse("host!~web-2")]))
        #expect(cpu0.map(\.key).sorted() == (try tsKeys(rig.redis, ["name=cpu", "cpu=cpu0", "host=web-1", "rollup="])))
        let notTotal = try engine.series(Selector(name: "cpu", [try .parse("cpu!=cpu-total"), try .parse("field=usage_user")]))
        #expect(notTotal.map(\.key).sorted() == (try tsKeys(rig.redis, ["name=cpu", "cpu=cpu0", "field=usage_user", "rollup="])))
        // No = matcher: SCAN over the key template's pattern, labels from TS.INFO; rollups left out.
        let everything = try engine.series(Selector())
        #expect(everything.map(\.key).sorted() == (try tsKeys(rig.redis, ["name=(cpu,app)", "rollup="])))
        #expect(everything.count == 9 && everything.allSatisfy { $0.labels["rollup"] == nil })
        let noName = try engine.series(Selector([try .parse("host=~web-2"), try .parse("field!=usage_user")]))
        #expect(noName.map(\.key).sorted() == (try tsKeys(rig.redis, ["host=web-2", "field=usage_system", "rollup="])))
        // A selector naming `rollup` selects rollups.
        let rollups = try engine.series(Selector(name: "cpu", [try .parse("rollup=max_5m")]))
        #expect(rollups.count == 8 && rollups.allSatisfy { $0.key.hasSuffix(":max_5m") && $0.labels["rollup"] == "max_5m" })
        #expect(throws: QueryError.self) { try engine.series(Selector(name: "nosuch")) }
    }

    @Test func latestIsEachSeriesNewestSample() throws {
        let rig = try Rig()
        let latest = try rig.engine().latest(Selector(name: "cpu", [try .parse("field=usage_user")]))
        #expect(latest.count == 4)
        for l in latest {
            let raw = try tsSamples(rig.redis, l.series.key)
            #expect(l.timestamp == raw.last!.0 && l.timestamp == Self.data.end)
            #expect(l.value == .number(raw.last!.1))
        }
        // A rollup's newest value includes its open bucket (LATEST): the raw max of the last minute.
        let rollup = try rig.engine().latest(Selector(name: "cpu", [try .parse("rollup=max_1m"), try .parse("host=web-2"),
                                                                     try .parse("cpu=cpu0"), try .parse("field=usage_system")]))
        let raw = try tsSamples(rig.redis, "ts:web-2:cpu:usage_system:cpu=cpu0")
        let lastMinute = Self.data.end / 60_000 * 60_000
        #expect(rollup.map(\.timestamp) == [lastMinute])
        #expect(rollup.map(\.value) == [.number(raw.filter { $0.0 >= lastMinute }.map(\.1).max()!)])
    }

    @Test func rangeReadsTheCoarsestRollupThatFitsElseTheRawSeries() throws {
        let rig = try Rig()
        let engine = rig.engine()
        let now = Self.data.end + 30_000
        let selector = Selector(name: "cpu", field: "usage_user")
        func check(_ from: Int64, _ to: Int64, step: Int64, _ agg: Aggregation, rollup: String?, exact: Bool = true,
                   sourceLocation: SourceLocation = #_sourceLocation) throws {
            let q = RangeQuery(selector: selector, from: from, to: to, step: step, aggregation: agg)
            #expect(engine.rollup(for: q, now: now).map { "\($0.aggregation)_\($0.bucketText)" } == rollup, sourceLocation: sourceLocation)
            let result = try engine.range(q, now: now)
            #expect(result.series.count == 4, sourceLocation: sourceLocation)
            for s in result.series {
                #expect(s.rollup == rollup && s.sourceKey == s.series.key + (rollup.map { ":" + $0 } ?? ""), sourceLocation: sourceLocation)
                let want = expectedBuckets(try tsSamples(rig.redis, s.series.key), first: q.firstBucket, end: q.end, step: step, agg.rawValue)
                #expect(!want.isEmpty && samePoints(s.points, want, exact: exact), "\(s.series.key) \(agg) step \(step): \(s.points.prefix(4)) vs \(want.prefix(4))",
                        sourceLocation: sourceLocation)
            }
        }
        let s = Self.data.start, e = Self.data.end
        // Step 10m: max_5m (coarser than max_1m, divides it, 30d covers).
        try check(s, e, step: 600_000, .max, rollup: "max_5m")
        // Step 3m: 5m is longer; max_1m divides it.
        try check(s + 15_000, e - 45_000, step: 180_000, .max, rollup: "max_1m")
        // Step 90s: no max rollup divides it: the raw series.
        try check(s, e, step: 90_000, .max, rollup: nil)
        // Step 30s: every rollup bucket is longer.
        try check(s, s + 3_600_000, step: 30_000, .max, rollup: nil)
        // avg over avg_1m (each minute holds 6 samples: the same figure, in another order).
        try check(s, e, step: 300_000, .avg, rollup: "avg_1m", exact: false)
        // count: the counts of count_1m added up.
        try check(s, e, step: 120_000, .count, rollup: "count_1m")
        // min_2m keeps 1h: covers a range starting 50 minutes before now, not one starting 2 hours before.
        try check(e - 3_000_000, e, step: 240_000, .min, rollup: "min_2m")
        try check(s, e, step: 240_000, .min, rollup: nil)
        // No rollup of that aggregation.
        try check(s, e, step: 600_000, .sum, rollup: nil)
        try check(s, e, step: 600_000, .last, rollup: nil)
        // A day later max_1m (1d) no longer covers the start; max_5m (30d) still does.
        let later = now + 86_400_000
        #expect(engine.rollup(for: RangeQuery(selector: selector, from: s, to: e, step: 60_000, aggregation: .max), now: later) == nil)
        #expect(engine.rollup(for: RangeQuery(selector: selector, from: s, to: e, step: 600_000, aggregation: .max), now: later)?.bucketMs == 300_000)
    }

    @Test func aSeriesWithoutTheRollupIsReadRaw() throws {
        let rig = try Rig()
        // One series' rollup is gone (e.g. made before the rollup was configured).
        _ = try rig.redis.command(["DEL", "ts:web-1:cpu:usage_user:cpu=cpu0:max_5m"])
        let q = RangeQuery(selector: Selector(name: "cpu", field: "usage_user", [try .parse("host=web-1")]),
                           from: Self.data.start, to: Self.data.end, step: 600_000, aggregation: .max)
        let result = try rig.engine().range(q, now: Self.data.end)
        #expect(result.series.map(\.rollup) == ["max_5m", nil])
        #expect(result.series.map(\.sourceKey) == ["ts:web-1:cpu:usage_user:cpu=cpu-total:max_5m", "ts:web-1:cpu:usage_user:cpu=cpu0"])
        for s in result.series {
            let want = expectedBuckets(try tsSamples(rig.redis, s.series.key), first: q.firstBucket, end: q.end, step: q.step, "max")
            #expect(samePoints(s.points, want))
        }
    }

    @Test func limitsRefuseBeforeReading() throws {
        let rig = try Rig()
        var limits = QueryLimits()
        limits.maxSeries = 7
        limits.maxPoints = 100
        let engine = rig.engine(limits)
        // 8 series: one more than allowed, whether Redis applies every matcher or not.
        #expect(throws: QueryError.self) { try engine.series(Selector(name: "cpu")) }
        #expect(throws: QueryError.self) { try engine.latest(Selector(name: "cpu", [try .parse("host=~web-.")])) }
        #expect(throws: QueryError.self) { try engine.series(Selector([try .parse("field=~usage_.*")])) }
        #expect(try engine.series(Selector(name: "cpu", [try .parse("host=web-1")])).count == 4)
        // 101 buckets of 1 m.
        let tooLong = RangeQuery(selector: Selector(name: "cpu", field: "usage_user"), from: Self.data.start, to: Self.data.start + 100 * 60_000,
                                 step: 60_000, aggregation: .avg)
        do {
            _ = try engine.range(tooLong, now: Self.data.end)
            Issue.record("a range of 101 points passed max_points 100")
        } catch {
            #expect(error.description == "the range holds 101 points per series, more than 100 (max_points); use a larger step or a shorter range")
        }
        var ok = tooLong
        ok.to -= 60_000
        #expect(try engine.range(ok, now: Self.data.end).series.allSatisfy { $0.points.count == 100 })
    }
}
