import Foundation
import RedisSink
import SpillwayConfig
import SpillwayCore
import SpillwayPromQL
@testable import SpillwayQuery
import SpillwayTestSupport
import Testing

/// `spillway serve`'s answers (PrometheusAPI over PrometheusSource, in process) against a
/// redis-stack server (timeseries, with an avg rollup) and a redis-server (streams), both filled by
/// the agent's writer: every figure is checked against TS.RANGE / XRANGE, computed by the test.
@Suite struct PrometheusAnswers {
    /// 2025-06-15T14:00:00Z, 30 minutes (180 intervals of 10 s).
    static let data = Dataset(start: 1_749_996_000_000, count: 180)
    static let host = "web-1"

    final class Rig {
        let server: RedisServer
        let redis: RedisConnection
        let config: RedisOutputConfig
        let timeseries: Bool

        init(timeseries: Bool) throws {
            self.timeseries = timeseries
            server = timeseries ? try RedisServer(stack: true) : try RedisServer()
            config = try outputConfig(server.url, timeseries: timeseries, rollups: timeseries ? ["avg:1m:0"] : [])
            try fill(config, PrometheusAnswers.data.records())
            redis = try connect(server.url)
        }

        /// `path` with `parameters`, answered at `now` (ms).
        func ask(_ path: String, _ parameters: [(String, String)], now: Int64, maxSeries: Int = 10_000, url: String? = nil) throws -> (status: Int, json: [String: Any]) {
            var c = config
            if let url { c.endpoint = try RedisEndpoint.parse(url) }
            var limits = QueryLimits()
            limits.maxSeries = maxSeries
            let engine = QueryEngine(redis: c, layout: QueryLayout(redis: c, inputKeys: []), limits: limits)
            let api = PrometheusAPI(evaluator: Evaluator(maxSeries: maxSeries))
            let r = api.handle(path: path, parameters: parameters.map { (name: $0.0, value: $0.1) }, now: now,
                               source: PrometheusSource(engine: engine, now: now, maxSamples: 1_000_000))
            return (r.status, try jsonObject(r.text))
        }

        /// The raw samples of host/cpu/field, from Redis directly.
        func raw(host: String, cpu: String, field: String) throws -> [(Int64, Double)] {
            if timeseries {
                let keys = try tsKeys(redis, ["name=cpu", "field=\(field)", "host=\(host)", "cpu=\(cpu)", "rollup="])
                #expect(keys.count == 1, "\(keys)")
                return try tsSamples(redis, keys[0])
            }
            return try streamEntries(redis, "metrics:\(host):cpu").compactMap { e in
                guard e.fields.contains(where: { $0 == ("tag_cpu", cpu) }), let v = e.fields.first(where: { $0.0 == field }) else { return nil }
                return (e.ms, Double(v.1)!)
            }
        }

        deinit {
            server.stop()
            server.removeFiles()
        }
    }

    static func result(_ json: [String: Any]) -> [[String: Any]] {
        ((json["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
    }

    static func metric(_ r: [String: Any]) -> [String: String] { r["metric"] as? [String: String] ?? [:] }

    static func value(_ pair: Any?) -> (Int64, Double)? {
        guard let p = pair as? [Any], p.count == 2, let t = p[0] as? Double, let v = (p[1] as? String).flatMap(Double.init) else { return nil }
        return (Int64((t * 1000).rounded()), v)
    }

    static func seconds(_ ms: Int64) -> String {
        ms % 1000 == 0 ? String(ms / 1000) : String(format: "%.3f", Double(ms) / 1000)
    }

    /// The average of `raw` in each minute's window (t - 1m, t], t = from, from + 1m, … to: the test's
    /// own avg_over_time(…[1m]).
    static func windowAverages(_ raw: [(Int64, Double)], from: Int64, to: Int64) -> [(Int64, Double)] {
        stride(from: from, through: to, by: 60_000).compactMap { t in
            let w = raw.filter { $0.0 > t - 60_000 && $0.0 <= t }.map(\.1)
            return w.isEmpty ? nil : (t, w.reduce(0, +) / Double(w.count))
        }
    }

    @Test(arguments: [true, false]) func instantQueriesTakeEachSeriesNewestSample(timeseries: Bool) throws {
        let rig = try Rig(timeseries: timeseries)
        let at = Self.data.end + 5_000
        let (status, json) = try rig.ask("/api/v1/query", [("query", #"cpu_usage_user{host="web-1"}"#), ("time", Self.seconds(at))], now: at)
        #expect(status == 200 && (json["data"] as? [String: Any])?["resultType"] as? String == "vector", "\(json)")
        let got = Self.result(json).map { (Self.metric($0), Self.value($0["value"])) }
        #expect(got.map(\.0) == Dataset.cpus.map { ["__name__": "cpu_usage_user", "cpu": $0, "host": "web-1"] })
        for (labels, v) in got {
            let want = try rig.raw(host: "web-1", cpu: labels["cpu"]!, field: "usage_user").last!.1
            #expect(v?.0 == at && v?.1 == want, "\(labels): \(String(describing: v)) != \(want)")
        }
        // Past the 5 minutes' lookback: nothing.
        let late = try rig.ask("/api/v1/query", [("query", "cpu_usage_user")], now: Self.data.end + 300_001)
        #expect(late.status == 200 && Self.result(late.json).isEmpty)
        // sum by (host): the newest values added per host.
        let sum = try rig.ask("/api/v1/query", [("query", "sum by (host) (cpu_usage_system)"), ("time", Self.seconds(at))], now: at)
        for r in Self.result(sum.json) {
            let host = Self.metric(r)["host"]!
            let want = try Dataset.cpus.map { try rig.raw(host: host, cpu: $0, field: "usage_system").last!.1 }.reduce(0, +)
            #expect(close(Self.value(r["value"])!.1, want), "\(host)")
        }
        #expect(Self.result(sum.json).map { Self.metric($0) } == Dataset.hosts.map { ["host": $0] })
    }

    @Test(arguments: [true, false]) func rangeQueriesMatchTheirWindows(timeseries: Bool) throws {
        let rig = try Rig(timeseries: timeseries)
        let start = Self.data.start + 60_000, end = Self.data.end / 60_000 * 60_000
        // A window as long as the step (Grafana's $__interval): aggregated by Redis (TS.RANGE ALIGN) or
        // in buckets of the stream's entries.
        let avg = try rig.ask("/api/v1/query_range", [("query", #"avg_over_time(cpu_usage_user{cpu="cpu0"}[1m])"#), ("start", Self.seconds(start)),
                                                       ("end", Self.seconds(end)), ("step", "60")], now: end)
        #expect(avg.status == 200 && (avg.json["data"] as? [String: Any])?["resultType"] as? String == "matrix")
        #expect(Self.result(avg.json).map { Self.metric($0) } == Dataset.hosts.map { ["cpu": "cpu0", "host": $0] })
        for r in Self.result(avg.json) {
            let raw = try rig.raw(host: Self.metric(r)["host"]!, cpu: "cpu0", field: "usage_user")
            // Prometheus's window (t - 1m, t] at each step.
            let want = Self.windowAverages(raw, from: start, to: end)
            let got = (r["values"] as? [Any] ?? []).compactMap(Self.value)
            #expect(got.count == want.count && zip(got, want).allSatisfy { $0.0 == $1.0 && close($0.1, $1.1) }, "\(got) != \(want)")
        }
        // The same with a start off the step's grid (Grafana aligns to the browser's time zone;
        // promtool's default start has milliseconds): the windows still end at each step.
        let odd = start + 35_250
        let shifted = try rig.ask("/api/v1/query_range", [("query", #"avg_over_time(cpu_usage_user{cpu="cpu0"}[1m])"#), ("start", Self.seconds(odd)),
                                                           ("end", Self.seconds(end)), ("step", "60")], now: end)
        #expect(Self.result(shifted.json).count == 2)
        for r in Self.result(shifted.json) {
            let raw = try rig.raw(host: Self.metric(r)["host"]!, cpu: "cpu0", field: "usage_user")
            let want = Self.windowAverages(raw, from: odd, to: end)
            let got = (r["values"] as? [Any] ?? []).compactMap(Self.value)
            #expect(!want.isEmpty && got.count == want.count && zip(got, want).allSatisfy { $0.0 == $1.0 && close($0.1, $1.1) }, "\(got) != \(want)")
        }
        // Any other window: the raw samples in (t - 30 s, t] at each step.
        let max = try rig.ask("/api/v1/query_range", [("query", #"max_over_time(cpu_usage_system{host="web-2"}[30s])"#), ("start", Self.seconds(start + 5_000)),
                                                       ("end", Self.seconds(end)), ("step", "45s")], now: end)
        #expect(Self.result(max.json).count == 2)
        for r in Self.result(max.json) {
            let raw = try rig.raw(host: "web-2", cpu: Self.metric(r)["cpu"]!, field: "usage_system")
            var want: [(Int64, Double)] = []
            for t in stride(from: start + 5_000, through: end, by: 45_000) {
                let w = raw.filter { $0.0 > t - 30_000 && $0.0 <= t }.map(\.1)
                if let m = w.max() { want.append((t, m)) }
            }
            let got = (r["values"] as? [Any] ?? []).compactMap(Self.value)
            #expect(got.count == want.count && zip(got, want).allSatisfy { $0 == $1 }, "\(got) != \(want)")
        }
        // A plain selector: the newest sample at or before each step.
        let plain = try rig.ask("/api/v1/query_range", [("query", #"cpu_usage_user{host="web-1",cpu="cpu-total"}"#), ("start", Self.seconds(start + 1)),
                                                         ("end", Self.seconds(start + 120_001)), ("step", "20")], now: end)
        let raw = try rig.raw(host: "web-1", cpu: "cpu-total", field: "usage_user")
        let want = stride(from: start + 1, through: start + 120_001, by: 20_000).map { t in (t, raw.last { $0.0 <= t }!.1) }
        let got = (Self.result(plain.json).first?["values"] as? [Any] ?? []).compactMap(Self.value)
        #expect(got.count == want.count && zip(got, want).allSatisfy { $0 == $1 }, "\(got) != \(want)")
    }

    @Test(arguments: [true, false]) func seriesAndLabelsListWhatExists(timeseries: Bool) throws {
        let rig = try Rig(timeseries: timeseries)
        let now = Self.data.end + 1000
        let series = try rig.ask("/api/v1/series", [("match[]", #"{host="web-2"}"#)], now: now)
        func sortKey(_ l: [String: String]) -> String { l.keys.sorted().map { $0 + "=" + l[$0]! }.joined(separator: ",") }
        var want: [[String: String]] = []
        for cpu in Dataset.cpus {
            for field in Dataset.fields { want.append(["__name__": "cpu_" + field, "cpu": cpu, "host": "web-2"]) }
        }
        want.sort { sortKey($0) < sortKey($1) }
        #expect(series.status == 200 && (series.json["data"] as? [[String: String]]) == want, "\(series.json)")
        let names = try rig.ask("/api/v1/label/__name__/values", [], now: now)
        // The app records' text field (message) is no series; its number (level) is.
        #expect(names.json["data"] as? [String] == ["app_level", "cpu_usage_system", "cpu_usage_user"], "\(names.json)")
        let labels = try rig.ask("/api/v1/labels", [("match[]", "cpu_usage_user")], now: now)
        #expect(labels.json["data"] as? [String] == ["__name__", "cpu", "host"])
        let hosts = try rig.ask("/api/v1/label/host/values", [], now: now)
        #expect(hosts.json["data"] as? [String] == Dataset.hosts)
        // `start`: a series whose newest sample is older than the 5-minute lookback before it is
        // not listed (app's last record is 1,200 s in, cpu's 1,790 s).
        func namesSince(_ seconds: Int64) throws -> [String]? {
            try rig.ask("/api/v1/label/__name__/values", [("start", String(Double(Self.data.start) / 1000 + Double(seconds)))], now: now).json["data"] as? [String]
        }
        #expect(try namesSince(1500) == ["app_level", "cpu_usage_system", "cpu_usage_user"])
        #expect(try namesSince(1501) == ["cpu_usage_system", "cpu_usage_user"])
        #expect(try namesSince(2091) == [])
        let gone = try rig.ask("/api/v1/series", [("match[]", "app_level"), ("start", String(Double(Self.data.start) / 1000 + 1600))], now: now)
        #expect(gone.status == 200 && (gone.json["data"] as? [Any])?.isEmpty == true, "\(gone.json)")
    }

    @Test func errorsAndLimits() throws {
        let rig = try Rig(timeseries: false)
        let now = Self.data.end
        let tooMany = try rig.ask("/api/v1/query", [("query", "cpu_usage_user")], now: now, maxSeries: 3)
        #expect(tooMany.status == 422 && tooMany.json["errorType"] as? String == "execution")
        #expect((tooMany.json["error"] as? String)?.contains("more than 3") == true, "\(tooMany.json)")
        let port = try RedisServer.freePort()
        let down = try rig.ask("/api/v1/query", [("query", "cpu_usage_user")], now: now, url: "redis://127.0.0.1:\(port)/0")
        #expect(down.status == 503 && down.json["errorType"] as? String == "unavailable", "\(down.json)")
        let unknown = try rig.ask("/api/v1/query", [("query", "no_such_metric")], now: now)
        #expect(unknown.status == 200 && Self.result(unknown.json).isEmpty)
        // A metric name of more parts than are looked up is the query's fault: 400, as a bad query.
        let long = try rig.ask("/api/v1/query", [("query", (0...13).map { "p\($0)" }.joined(separator: "_"))], now: now)
        #expect(long.status == 400 && long.json["errorType"] as? String == "bad_data", "\(long.json)")
        #expect((long.json["error"] as? String)?.contains("more than 13 parts") == true, "\(long.json)")
        let thirteen = try rig.ask("/api/v1/query", [("query", (0...12).map { "p\($0)" }.joined(separator: "_"))], now: now)
        #expect(thirteen.status == 200 && Self.result(thirteen.json).isEmpty, "\(thirteen.json)")
    }
}
