import Foundation
import SpillwayPromQL
import Testing

/// A source whose every read fails as Redis down would.
struct Down: SeriesSource {
    func samples(_ selector: Selector, from: Int64, to: Int64) throws -> [Series] { throw PrometheusAPI.Unavailable("cannot read from Redis: Connection refused") }
    func windows(_ selector: Selector, function: RangeFunction, start: Int64, end: Int64, step: Int64) throws -> [Series]? { nil }
    func labelSets(_ selectors: [Selector], from: Int64, to: Int64) throws -> [[String: String]] { throw PrometheusAPI.Unavailable("cannot read from Redis: Connection refused") }
}

private func json(_ r: PrometheusAPI.Response) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any] ?? [:]
}

@Suite struct API {
    let src = Fixed([
        Series(labels: ["__name__": "cpu_usage_user", "host": "web-1", "cpu": "cpu-total"], samples: [Sample(1_700_000_000_000, 1.5), Sample(1_700_000_010_000, 2.5)]),
        Series(labels: ["__name__": "cpu_usage_user", "host": "web-2", "cpu": "cpu-total"], samples: [Sample(1_700_000_010_000, 4)]),
        Series(labels: ["__name__": "mem_used", "host": "web-1"], samples: [Sample(1_700_000_005_000, 1e9)]),
    ])
    let api = PrometheusAPI()
    let now: Int64 = 1_700_000_020_000

    @Test func instantQueryHasTheVectorShape() {
        // As Grafana sends it (POST form fields arrive as parameters too).
        let r = api.handle(path: "/api/v1/query", parameters: [("query", #"cpu_usage_user{host="web-1"}"#), ("time", "1700000015.5")], now: now, source: src)
        #expect(r.status == 200)
        #expect(r.text == #"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"cpu_usage_user","cpu":"cpu-total","host":"web-1"},"value":[1700000015.5,"2.5"]}]}}"#)
        // Without time: now.
        let s = api.handle(path: "/api/v1/query", parameters: [("query", "sum(cpu_usage_user)")], now: now, source: src)
        #expect(s.text == #"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000020,"6.5"]}]}}"#)
        // Grafana's "Save & test".
        let t = api.handle(path: "/api/v1/query", parameters: [("query", "1+1"), ("time", "1700000000")], now: now, source: src)
        #expect(t.text == #"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"2"]}}"#)
    }

    @Test func rangeQueryHasTheMatrixShape() {
        let r = api.handle(path: "/api/v1/query_range", parameters: [("query", "max_over_time(cpu_usage_user[10s])"), ("start", "2023-11-14T22:13:20Z"),
                                                                     ("end", "1700000020"), ("step", "10s")], now: now, source: src)
        #expect(r.status == 200)
        #expect(r.text == #"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"cpu":"cpu-total","host":"web-1"},"values":[[1700000000,"1.5"],[1700000010,"2.5"]]},{"metric":{"cpu":"cpu-total","host":"web-2"},"values":[[1700000010,"4"]]}]}}"#)
        let d = json(r)["data"] as? [String: Any]
        #expect((d?["result"] as? [Any])?.count == 2)
    }

    @Test func seriesAndLabels() {
        let s = api.handle(path: "/api/v1/series", parameters: [("match[]", #"{host="web-1"}"#), ("start", "1699999999"), ("end", "1700000020")], now: now, source: src)
        #expect(s.text == #"{"status":"success","data":[{"__name__":"cpu_usage_user","cpu":"cpu-total","host":"web-1"},{"__name__":"mem_used","host":"web-1"}]}"#)
        let l = api.handle(path: "/api/v1/labels", parameters: [], now: now, source: src)
        #expect(l.text == #"{"status":"success","data":["__name__","cpu","host"]}"#)
        let v = api.handle(path: "/api/v1/label/__name__/values", parameters: [], now: now, source: src)
        #expect(v.text == #"{"status":"success","data":["cpu_usage_user","mem_used"]}"#)
        let h = api.handle(path: "/api/v1/label/host/values", parameters: [("match[]", "mem_used")], now: now, source: src)
        #expect(h.text == #"{"status":"success","data":["web-1"]}"#)
        #expect(api.handle(path: "/api/v1/rules", parameters: [], now: now, source: src).text == #"{"status":"success","data":{"groups":[]}}"#)
        #expect(PrometheusAPI.error(status: 503, message: "timeout").text == #"{"status":"error","errorType":"unavailable","error":"timeout"}"#)
        let limited = api.handle(path: "/api/v1/label/host/values", parameters: [("limit", "1")], now: now, source: src)
        #expect(limited.text == #"{"status":"success","data":["web-1"]}"#)
    }

    @Test func errorsHaveThePrometheusShape() {
        func check(_ path: String, _ p: [(String, String)], _ status: Int, _ type: String, _ contains: String, source: some SeriesSource) {
            let r = api.handle(path: path, parameters: p, now: now, source: source)
            let j = json(r)
            #expect(r.status == status && j["status"] as? String == "error" && j["errorType"] as? String == type, "\(path) \(p): \(r.status) \(r.text)")
            #expect((j["error"] as? String)?.contains(contains) == true, "\(r.text)")
        }
        check("/api/v1/query", [("query", "histogram_quantile(0.9, x)")], 400, "bad_data", "function \"histogram_quantile\" is not supported", source: src)
        check("/api/v1/query", [], 400, "bad_data", #"invalid parameter "query": missing"#, source: src)
        check("/api/v1/query", [("query", "x"), ("time", "yesterday")], 400, "bad_data", "cannot parse \"yesterday\" to a valid timestamp", source: src)
        check("/api/v1/query_range", [("query", "x"), ("start", "0"), ("end", "20"), ("step", "1ms")], 400, "bad_data", "exceeded maximum resolution of 11000 points", source: src)
        check("/api/v1/query_range", [("query", "x"), ("start", "10"), ("end", "0"), ("step", "1")], 400, "bad_data", "end timestamp must not be before start time", source: src)
        check("/api/v1/query_range", [("query", "x"), ("start", "0"), ("end", "10"), ("step", "abc")], 400, "bad_data", "valid duration", source: src)
        check("/api/v1/query_range", [("query", "x"), ("start", "0"), ("end", "10"), ("step", "0")], 400, "bad_data", "zero or negative query resolution step widths are not accepted", source: src)
        check("/api/v1/series", [], 400, "bad_data", "no match[] parameter provided", source: src)
        check("/api/v1/series", [("match[]", "rate(x[5m])")], 400, "bad_data", "not a series selector", source: src)
        check("/api/v1/label/a-b/values", [], 400, "bad_data", "invalid label name", source: src)
        check("/api/v1/query", [("query", "cpu_usage_user")], 503, "unavailable", "Connection refused", source: Down())
        check("/api/v1/labels", [], 503, "unavailable", "Connection refused", source: Down())
        check("/api/v1/nope", [], 404, "not_found", "unknown endpoint", source: src)
        let tooMany = PrometheusAPI(evaluator: Evaluator(maxSeries: 1)).handle(path: "/api/v1/query", parameters: [("query", "cpu_usage_user")], now: now, source: src)
        #expect(tooMany.status == 422 && tooMany.text.contains("more than 1 series (max_series)"))
    }

    @Test func timesAndValues() throws {
        #expect(try PrometheusAPI.time("2026-12-01T10:00:00Z", "t") == 1_796_119_200_000)
        #expect(try PrometheusAPI.time("2026-12-01T11:00:00.25+01:00", "t") == 1_796_119_200_250)
        #expect(try PrometheusAPI.time("1796119200.25", "t") == 1_796_119_200_250)
        #expect(try PrometheusAPI.time("1970-01-01T00:00:00Z", "t") == 0)
        #expect(try PrometheusAPI.time("2024-02-29T23:59:59.999Z", "t") == 1_709_251_199_999)
        #expect(throws: (any Error).self) { try PrometheusAPI.time("2026-13-01T10:00:00Z", "t") }
        #expect(PrometheusAPI.formatValue(2) == "2")
        #expect(PrometheusAPI.formatValue(0.25) == "0.25")
        #expect(PrometheusAPI.formatValue(.nan) == "NaN")
        #expect(PrometheusAPI.formatValue(-.infinity) == "-Inf")
    }
}
