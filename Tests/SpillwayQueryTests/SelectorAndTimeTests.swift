import SpillwayPromQL
import SpillwayCore
@testable import SpillwayQuery
import Testing

@Suite struct QuerySelectors {
    @Test func matchersParseAndMatchAsPromQLDoes() throws {
        let eq = try LabelMatcher.parse("host=web-1")
        #expect(eq.label == "host" && eq.op == .equal && eq.value == "web-1")
        #expect(eq.matches("web-1") && !eq.matches("web-10") && !eq.matches(nil))
        let ne = try LabelMatcher.parse("host!=web-1")
        #expect(ne.op == .notEqual && ne.matches("web-2") && ne.matches(nil) && !ne.matches("web-1"))
        let re = try LabelMatcher.parse("cpu=~cpu[0-9]+")
        #expect(re.op == .matchesRegex && re.matches("cpu0") && re.matches("cpu12"))
        // Anchored at both ends, as in Prometheus.
        #expect(!re.matches("cpu-total") && !re.matches("xcpu0") && !re.matches("cpu0x"))
        let nre = try LabelMatcher.parse("host!~web-.*")
        #expect(nre.op == .notMatchesRegex && !nre.matches("web-1") && nre.matches("db-1") && nre.matches(nil))
        // An absent label is the empty string: `k=` selects series without k.
        let absent = try LabelMatcher.parse("rollup=")
        #expect(absent.value.isEmpty && absent.matches(nil) && !absent.matches("max_1m"))
        // The value is everything after the operator.
        #expect(try LabelMatcher.parse("path=/a=b").value == "/a=b")
        for bad in ["hostweb", "=v", "!=v", "cpu=~[unclosed"] {
            #expect(throws: LabelMatcher.Invalid.self, "\(bad)") { try LabelMatcher.parse(bad) }
        }
    }

    @Test func selectorsPushDownWhatRedisTimeSeriesReadsTheSame() throws {
        #expect(try LabelMatcher.parse("host=web-1").timeSeriesFilter == "host=web-1")
        #expect(try LabelMatcher.parse("host!=web-1").timeSeriesFilter == "host!=web-1")
        #expect(try LabelMatcher.parse("rollup=").timeSeriesFilter == "rollup=")
        // Regular expressions and values its filter syntax would misread are applied after.
        #expect(try LabelMatcher.parse("host=~web.*").timeSeriesFilter == nil)
        #expect(try LabelMatcher.parse("path=(a,b)").timeSeriesFilter == nil)
        #expect(try LabelMatcher.parse("msg=a b").timeSeriesFilter == nil)
        let s = Selector(name: "cpu", field: "usage_user", [try LabelMatcher.parse("host=~web-.*")])
        #expect(s.equality("name") == "cpu" && s.equality("field") == "usage_user" && s.equality("host") == nil)
        #expect(s.matches(["name": "cpu", "field": "usage_user", "host": "web-3"]))
        #expect(!s.matches(["name": "cpu", "field": "usage_user", "host": "db-3"]))
        #expect(!s.matches(["name": "mem", "field": "usage_user", "host": "web-3"]))
        #expect(s.description == #"{name="cpu", field="usage_user", host=~"web-.*"}"#)
    }

    @Test func keyTemplatesGiveScanPatternsAndReadKeysBack() throws {
        let t = try KeyTemplate("metrics:{host}:{name}")
        #expect(t.scanPattern(Selector()) == "metrics:*:*")
        #expect(t.scanPattern(Selector(name: "cpu")) == "metrics:*:cpu")
        #expect(t.scanPattern(Selector([try LabelMatcher.parse("host=we*b[1]")])) == #"metrics:we\*b\[1\]:*"#)
        // Regular expressions never narrow the pattern (they are applied to the labels after).
        #expect(t.scanPattern(Selector([try LabelMatcher.parse("host=~web-1")])) == "metrics:*:*")
        #expect(t.labels(of: "metrics:web-1:cpu") == ["host": "web-1", "name": "cpu"])
        #expect(t.labels(of: "other:web-1:cpu") == nil)
        let tagged = try KeyTemplate("m.{tag.dc}.{host}.{name}")
        #expect(tagged.labels(of: "m.eu-1.web-1.disk") == ["dc": "eu-1", "host": "web-1", "name": "disk"])
        #expect(try KeyTemplate("ts:{host}:{name}:{field}", allowField: true).scanPattern(Selector(name: "mem"), suffix: "*") == "ts:*:mem:**")
    }
}

@Suite struct QueryTimes {
    let now: Int64 = 1_750_000_000_123

    @Test func readsRelativeRFC3339AndEpochTimes() {
        #expect(QueryTime.parse("now", now: now) == now)
        #expect(QueryTime.parse("-1h", now: now) == now - 3_600_000)
        #expect(QueryTime.parse("now-90s", now: now) == now - 90_000)
        #expect(QueryTime.parse("now+5m", now: now) == now + 300_000)
        #expect(QueryTime.parse("-1h30m", now: now) == now - 5_400_000)
        #expect(QueryTime.parse("2025-06-15T15:06:40Z", now: now) == 1_750_000_000_000)
        #expect(QueryTime.parse("2025-06-15T15:06:40.5Z", now: now) == 1_750_000_000_500)
        #expect(QueryTime.parse("2025-06-15 17:06:40.123456+02:00", now: now) == 1_750_000_000_123)
        #expect(QueryTime.parse("2025-06-15T10:06:40-05:00", now: now) == 1_750_000_000_000)
        #expect(QueryTime.parse("2024-02-29T00:00:00Z", now: now) == 1_709_164_800_000)
        #expect(QueryTime.parse("1750000000", now: now) == 1_750_000_000_000)
        #expect(QueryTime.parse("1750000000.25", now: now) == 1_750_000_000_250)
        #expect(QueryTime.parse("1750000000123", now: now) == 1_750_000_000_123)
        #expect(QueryTime.parse("+1h", now: now) == now + 3_600_000)
        #expect(QueryTime.parse("-90", now: now) == now - 90_000)
        for bad in ["yesterday", "", "-1x", "2025-02-30T00:00:00Z", "2025-06-15T15:06:40", "2025-06-15", "1.2.3", "now-", "12:00", "+", "-1.", "+.5"] {
            #expect(QueryTime.parse(bad, now: now) == nil, "\(bad)")
        }
        // Durations: a plain number is seconds (as Prometheus's step).
        #expect(QueryTime.durationMs("10") == 10_000)
        #expect(QueryTime.durationMs("1.5") == 1_500)
        #expect(QueryTime.durationMs("90s") == 90_000)
        for bad in ["", ".", "1.", ".5", "1.2.3", "-10", "-10s", "10x", "1e3"] { #expect(QueryTime.durationMs(bad) == nil, "\(bad)") }
    }

    @Test func formatsRFC3339InUTCAndReadsItBack() {
        #expect(QueryTime.format(1_750_000_000_000) == "2025-06-15T15:06:40Z")
        #expect(QueryTime.format(1_750_000_000_050) == "2025-06-15T15:06:40.050Z")
        #expect(QueryTime.format(0) == "1970-01-01T00:00:00Z")
        for ms: Int64 in [0, 951_782_400_000, 1_709_164_800_999, 4_102_444_800_000, 1_750_000_000_123] {
            #expect(QueryTime.parse(QueryTime.format(ms), now: 0) == ms)
        }
    }

    @Test func rangesAreWholeEpochAlignedBuckets() {
        let q = RangeQuery(selector: Selector(), from: 90_500, to: 180_000, step: 60_000, aggregation: .avg)
        #expect(q.firstBucket == 60_000 && q.lastBucket == 180_000 && q.bucketCount == 3 && q.end == 239_999)
    }
}
