import SpillwayPromQL
import Foundation
import RedisSink
import SpillwayConfig
import SpillwayCore
@testable import SpillwayQuery
import SpillwayTestSupport
import Testing

/// The read layer against Debian's redis-server, streams written by the agent's writer: every
/// figure is checked against the entries XRANGE gives, aggregated by the test itself.
@Suite struct StreamQueries {
    /// 2025-06-15T14:00:00Z, one hour: 360 intervals, 720 entries per host's cpu stream.
    static let data = Dataset(start: 1_749_996_000_000, count: 360)

    final class Rig {
        let server: RedisServer
        let redis: RedisConnection
        let config: RedisOutputConfig

        init() throws {
            server = try RedisServer()
            config = try outputConfig(server.url, timeseries: false)
            try fill(config, StreamQueries.data.records())
            redis = try connect(server.url)
        }

        func engine(pageSize: Int = 1000, maxSeries: Int = 10_000) -> QueryEngine {
            var limits = QueryLimits()
            limits.pageSize = pageSize
            limits.maxSeries = maxSeries
            return QueryEngine(redis: config, layout: QueryLayout(redis: config, inputKeys: []), limits: limits)
        }

        /// Per series (host, cpu, field) of `name`, its samples from XRANGE, as the test reads them.
        func samples(_ name: String) throws -> [Labels: [(Int64, String)]] {
            var out: [Labels: [(Int64, String)]] = [:]
            for host in Dataset.hosts {
                for e in try streamEntries(redis, "metrics:\(host):\(name)") {
                    var tags: Labels = ["name": name]
                    for (k, v) in e.fields where k.hasPrefix("tag_") { tags[String(k.dropFirst(4))] = v }
                    for (k, v) in e.fields where !k.hasPrefix("tag_") && k != "timestamp" {
                        var labels = tags
                        labels["field"] = k
                        out[labels, default: []].append((e.ms, v))
                    }
                }
            }
            return out
        }

        deinit {
            server.stop()
            server.removeFiles()
        }
    }

    @Test func seriesAreEachStreamsTagSetsAndFields() throws {
        let rig = try Rig()
        let engine = rig.engine(pageSize: 5)
        let cpu = try engine.series(Selector(name: "cpu"))
        let want = try rig.samples("cpu")
        #expect(cpu.count == 8 && Set(cpu.map(\.labels)) == Set(want.keys))
        #expect(cpu.allSatisfy { $0.key == "metrics:\($0.labels["host"]!):cpu" })
        let filtered = try engine.series(Selector(name: "cpu", [try .parse("cpu=~cpu[0-9]"), try .parse("host!=web-2"), try .parse("field=usage_user")]))
        #expect(filtered.map(\.labels) == [["name": "cpu", "field": "usage_user", "cpu": "cpu0", "host": "web-1"]])
        // Every measurement: cpu of both hosts, app of web-1 (its text field too).
        let all = try engine.series(Selector())
        #expect(all.count == 10 && all.filter { $0.name == "app" }.map(\.field) == ["level", "message"])
        #expect(throws: QueryError.self) { try engine.series(Selector(name: "cpu", [try .parse("host=db-1")])) }
    }

    @Test func latestIsEachTagSetsNewestEntry() throws {
        let rig = try Rig()
        let want = try rig.samples("cpu")
        // Pages of 3 entries: the newest entry of each tag set is found across pages.
        let latest = try rig.engine(pageSize: 3).latest(Selector(name: "cpu"))
        #expect(latest.count == 8)
        for l in latest {
            let last = try #require(want[l.series.labels]?.last)
            #expect(l.timestamp == last.0 && l.value == .number(Double(last.1)!), "\(l.series.labels)")
        }
        // Text is printed as it is.
        let app = try rig.engine().latest(Selector(name: "app", field: "message"))
        let lastApp = try #require(try rig.samples("app")[["name": "app", "field": "message", "host": "web-1"]]?.last)
        #expect(app.map(\.value) == [.text(lastApp.1)] && app.map(\.timestamp) == [lastApp.0])
    }

    @Test func rangeAggregatesEntriesAcrossPages() throws {
        let rig = try Rig()
        let want = try rig.samples("cpu")
        for pageSize in [7, 1000] {
            let engine = rig.engine(pageSize: pageSize)
            for agg in Aggregation.allCases {
                // From mid-bucket to mid-bucket: whole buckets of 5 minutes.
                let q = RangeQuery(selector: Selector(name: "cpu", field: "usage_system", [try .parse("host=web-2")]),
                                   from: Self.data.start + 130_000, to: Self.data.end - 70_000, step: 300_000, aggregation: agg)
                let result = try engine.range(q, now: Self.data.end)
                #expect(result.series.count == 2)
                for s in result.series {
                    #expect(s.rollup == nil && s.sourceKey == "metrics:web-2:cpu")
                    let samples = try #require(want[s.series.labels]).map { ($0.0, Double($0.1)!) }
                    let expected = expectedBuckets(samples, first: q.firstBucket, end: q.end, step: q.step, agg.rawValue)
                    #expect(expected.count == 12 && samePoints(s.points, expected), "page \(pageSize) \(agg): \(s.points.prefix(3)) vs \(expected.prefix(3))")
                }
            }
        }
        // Text values are skipped; a field with none in the range is no error.
        let engine = rig.engine()
        let level = try engine.range(RangeQuery(selector: Selector(name: "app", field: "level"), from: Self.data.start, to: Self.data.end,
                                                step: 600_000, aggregation: .sum), now: Self.data.end)
        let levels = try #require(try rig.samples("app")[["name": "app", "field": "level", "host": "web-1"]]).map { ($0.0, Double($0.1)!) }
        #expect(samePoints(try #require(level.series.first).points, expectedBuckets(levels, first: Self.data.start, end: Self.data.end + 599_999, step: 600_000, "sum")))
        let text = try engine.range(RangeQuery(selector: Selector(name: "app", field: "message"), from: Self.data.start, to: Self.data.end,
                                               step: 600_000, aggregation: .count), now: Self.data.end)
        #expect(text.series.isEmpty)
        let before = try engine.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user"), from: Self.data.start - 7_200_000,
                                                 to: Self.data.start - 1, step: 60_000, aggregation: .avg), now: Self.data.end)
        #expect(before.series.isEmpty)
        #expect(throws: QueryError.self) {
            try engine.range(RangeQuery(selector: Selector(name: "cpu", field: "nosuch"), from: Self.data.start, to: Self.data.end,
                                        step: 60_000, aggregation: .avg), now: Self.data.end)
        }
    }

    @Test func limitsHoldForStreams() throws {
        let rig = try Rig()
        let engine = rig.engine(pageSize: 50, maxSeries: 3)
        let q = RangeQuery(selector: Selector(name: "cpu", field: "usage_user"), from: Self.data.start, to: Self.data.end, step: 60_000, aggregation: .avg)
        do {
            _ = try engine.range(q, now: Self.data.end)
            Issue.record("4 series passed max_series 3")
        } catch {
            #expect(error.description == "the query selects more than 3 series (max_series); narrow the selection or raise max_series")
        }
        #expect(throws: QueryError.self) { try engine.latest(Selector(name: "cpu")) }
        var narrow = q
        narrow.selector.matchers.append(try .parse("host=web-1"))
        #expect(try engine.range(narrow, now: Self.data.end).series.count == 2)
        // Keys: 3 streams, one more than allowed.
        #expect(throws: QueryError.self) { try rig.engine(maxSeries: 2).series(Selector()) }
    }
}
