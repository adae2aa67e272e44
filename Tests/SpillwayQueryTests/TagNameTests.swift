import Foundation
import RedisSink
import SpillwayConfig
import SpillwayCore
import SpillwayPromQL
@testable import SpillwayQuery
import SpillwayTestSupport
import Testing

/// A tag named like a label of the read side (diskio's device `name`): stored and read as
/// `tag_name`, shown by `serve` as `name` (the measurement being in `__name__`), so the devices stay
/// apart and the measurement keeps its name, in both formats.
@Suite struct TagsNamedLikeOurLabels {
    @Test(arguments: [true, false]) func aDeviceNameTagKeepsDevicesApart(timeseries: Bool) throws {
        let server = timeseries ? try RedisServer(stack: true) : try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let config = try outputConfig(server.url, timeseries: timeseries)
        let start: Int64 = 1_749_996_000_000
        var records: [Record] = []
        for i in 0..<6 {
            for (d, device) in ["sda", "vda"].enumerated() {
                records.append(Record(name: "diskio", tags: [Tag("host", "h"), Tag("name", device)], fields: [Field("reads", .int(Int64(100 * d + i)))],
                                      timestamp: (start + Int64(i) * 10_000) * 1_000_000))
            }
        }
        try fill(config, records)
        let engine = QueryEngine(redis: config, layout: QueryLayout(redis: config, inputKeys: []), limits: QueryLimits())
        let now = start + 60_000
        let series = try engine.series(Selector(name: "diskio"))
        #expect(series.map(\.labels) == ["sda", "vda"].map { ["name": "diskio", "field": "reads", "host": "h", "tag_name": $0] }, "\(series)")
        let latest = try engine.latest(Selector(name: "diskio", field: "reads", [try LabelMatcher("tag_name", .equal, "vda")]))
        #expect(latest.map(\.value) == [.number(105)])
        // serve: diskio_reads{name="…"}.
        let api = PrometheusAPI()
        let source = PrometheusSource(engine: engine, now: now, maxSamples: 10_000)
        let r = api.handle(path: "/api/v1/query", parameters: [("query", #"diskio_reads{name="sda"}"#), ("time", "\((start + 55_000) / 1000)")], now: now, source: source)
        #expect(r.text == #"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"diskio_reads","host":"h","name":"sda"},"value":[1749996055,"5"]}]}}"#, "\(r.text)")
        let all = api.handle(path: "/api/v1/query", parameters: [("query", "sum(diskio_reads)"), ("time", "\((start + 55_000) / 1000)")], now: now, source: source)
        #expect(all.text.contains(#""value":[1749996055,"110"]"#), "\(all.text)")
    }
}
