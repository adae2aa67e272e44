import SpillwayPromQL
import Foundation
import RedisSink
import SpillwayConfig
import SpillwayCore
@testable import SpillwayQuery
import SpillwayTestSupport
import Testing

/// `spillway query` as built, on the shipped agent.toml (its url and format set for the test's
/// server), against servers the agent's writer filled: the printed figures equal the test's own
/// aggregation of TS.RANGE and XRANGE; errors are one line and exit 1, bad arguments exit 2.
@Suite struct QueryCommand {
    static let data = Dataset(start: 1_749_996_000_000, count: 720)
    static let startText = "2025-06-15T14:00:00Z"
    static let endText = QueryTime.format(data.end)

    /// The table's columns start at the same offset on every line.
    static func aligned(_ table: String, _ columns: [String]) -> Bool {
        let lines = table.split(separator: "\n").map(String.init)
        guard let header = lines.first else { return false }
        let starts = columns.map { c in header.range(of: c).map { header.distance(from: header.startIndex, to: $0.lowerBound) } ?? -1 }
        return !starts.contains(-1) && lines.allSatisfy { line in
            starts.dropFirst().allSatisfy { s in
                let chars = Array(line)
                return s < chars.count && chars[s] != " " && chars[s - 1] == " " && chars[s - 2] == " "
            }
        }
    }

    @Test func timeseriesSeriesLatestAndRangeInEveryFormat() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        try fill(try outputConfig(server.url, timeseries: true, rollups: ["max:5m:0", "avg:1m:0"]), Self.data.records())
        let redis = try connect(server.url)
        let dir = try configDir(try shippedConfig(url: server.url, timeseries: true, rollups: #""max:5m:0", "avg:1m:0""#))
        defer { try? FileManager.default.removeItem(at: dir) }

        // series: a table with a column per label.
        let table = try spillway(["query", "series", "--name", "cpu", "--where", "host=web-1"], cwd: dir)
        #expect(table.status == 0 && table.stderr.isEmpty, "\(table)")
        let lines = table.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true) == ["NAME", "FIELD", "CPU", "HOST", "KEY"], "\(table.stdout)")
        #expect(lines.count == 5 && Self.aligned(table.stdout, ["NAME", "FIELD", "CPU", "HOST", "KEY"]), "\(table.stdout)")
        #expect(lines[1].split(separator: " ") == ["cpu", "usage_system", "cpu-total", "web-1", "ts:web-1:cpu:usage_system:cpu=cpu-total"])
        let json = try spillway(["query", "series", "--name", "cpu", "--json"], cwd: dir)
        let series = try jsonArray(json.stdout)
        #expect(series.compactMap { $0["key"] as? String }.sorted() == (try tsKeys(redis, ["name=cpu", "rollup="])))
        #expect(series.first?["labels"] as? [String: String] == ["cpu": "cpu-total", "host": "web-1"] && series.first?["field"] as? String == "usage_system")

        // latest: CSV, one line per series, as TS.RANGE's last sample.
        let latest = try spillway(["query", "latest", "cpu", "--field", "usage_user", "--csv"], cwd: dir)
        #expect(latest.status == 0, "\(latest)")
        let rows = latest.stdout.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        #expect(rows.first == ["name", "field", "cpu", "host", "timestamp", "value"] && rows.count == 5)
        for r in rows.dropFirst() {
            let last = try tsSamples(redis, "ts:\(r[3]):cpu:usage_user:cpu=\(r[2])").last!
            #expect(Int64(r[4]) == last.0 && Double(r[5]) == last.1, "\(r)")
        }

        // range: max over 10 m reads the max_5m rollup, over 90 s the raw series; both as TS.RANGE's
        // raw samples aggregated by the test.
        for (step, stepMs, source) in [("10m", Int64(600_000), ":max_5m"), ("90s", Int64(90_000), "")] {
            let r = try spillway(["query", "range", "cpu", "--field", "usage_user", "--where", "cpu=cpu0", "--from", Self.startText,
                                  "--to", Self.endText, "--step", step, "--agg", "max", "--json"], cwd: dir)
            #expect(r.status == 0, "\(r)")
            let doc = try jsonObject(r.stdout)
            #expect(doc["step"] as? Int == Int(stepMs) && doc["aggregation"] as? String == "max" && doc["from"] as? Int == Int(Self.data.start))
            let got = try #require(doc["series"] as? [[String: Any]])
            #expect(got.count == 2)
            for s in got {
                let key = try #require(s["key"] as? String)
                #expect(s["source"] as? String == key + source && (s["rollup"] as? String) == (source.isEmpty ? nil : "max_5m"))
                let points = try #require(s["points"] as? [[Double]]).map { (Int64($0[0]), $0[1]) }
                let lastBucket = Self.data.end / stepMs * stepMs
                let want = expectedBuckets(try tsSamples(redis, key), first: Self.data.start, end: lastBucket + stepMs - 1, step: stepMs, "max")
                #expect(points.count == want.count && zip(points, want).allSatisfy { $0 == $1 }, "\(step): \(points.prefix(3)) vs \(want.prefix(3))")
            }
        }
        // The table: a row per bucket, times in RFC 3339.
        let rangeTable = try spillway(["query", "range", "cpu", "--field", "usage_user", "--where", "host=web-2", "--where", "cpu=cpu-total",
                                       "--from", "2025-06-15T14:30:00Z", "--to", "2025-06-15T14:59:59Z", "--step", "5m", "--agg", "avg"], cwd: dir)
        #expect(rangeTable.status == 0, "\(rangeTable)")
        let rangeLines = rangeTable.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(rangeLines.first == ["NAME", "FIELD", "CPU", "HOST", "TIME", "VALUE"] && rangeLines.count == 7)
        #expect(Self.aligned(rangeTable.stdout, ["NAME", "FIELD", "CPU", "HOST", "TIME", "VALUE"]), "\(rangeTable.stdout)")
        let raw = try tsSamples(redis, "ts:web-2:cpu:usage_user:cpu=cpu-total")
        let want = expectedBuckets(raw, first: 1_749_997_800_000, end: 1_749_999_599_999, step: 300_000, "avg")
        #expect(rangeLines.dropFirst().map { $0[4] } == want.map { QueryTime.format($0.0) })
        #expect(zip(rangeLines.dropFirst().map { Double($0[5])! }, want.map(\.1)).allSatisfy { close($0, $1) })
    }

    @Test func streamsReadAcrossPagesWithTextAndCSVQuoting() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        try fill(try outputConfig(server.url, timeseries: false), Self.data.records())
        let redis = try connect(server.url)
        let dir = try configDir(try shippedConfig(url: server.url, timeseries: false))
        defer { try? FileManager.default.removeItem(at: dir) }
        // 1440 entries per stream: two pages of XRANGE COUNT 1000.
        #expect(try redis.command(["XLEN", "metrics:web-1:cpu"]) == .integer(1440))
        let r = try spillway(["query", "range", "cpu", "--field", "usage_user", "--where", "host=web-1", "--from", Self.startText, "--to", Self.endText,
                              "--step", "1m", "--agg", "avg", "--csv"], cwd: dir)
        #expect(r.status == 0, "\(r)")
        let rows = r.stdout.split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        #expect(rows.first == ["name", "field", "cpu", "host", "timestamp", "value"])
        var got: [String: [(Int64, Double)]] = [:]
        for row in rows.dropFirst() { got[row[2], default: []].append((Int64(row[4])!, Double(row[5])!)) }
        var samples: [String: [(Int64, Double)]] = [:]
        for e in try streamEntries(redis, "metrics:web-1:cpu") {
            let fields = Dictionary(e.fields, uniquingKeysWith: { $1 })
            samples[fields["tag_cpu"]!, default: []].append((e.ms, Double(fields["usage_user"]!)!))
        }
        #expect(Set(got.keys) == ["cpu-total", "cpu0"])
        for (cpu, points) in got {
            let want = expectedBuckets(samples[cpu]!, first: Self.data.start, end: Self.data.end + 59_999, step: 60_000, "avg")
            #expect(want.count == 120 && points.count == 120 && zip(points, want).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }, "\(cpu)")
        }
        // A text value: as it is in the table (one line), quoted in CSV, a string in JSON.
        let message = try #require(try streamEntries(redis, "metrics:web-1:app").last?.fields.first { $0.0 == "message" }?.1)
        let table = try spillway(["query", "latest", "app"], cwd: dir)
        #expect(table.status == 0 && table.stdout.contains(message) && table.stdout.split(separator: "\n").count == 3, "\(table)")
        let csv = try spillway(["query", "latest", "app", "--field", "message", "--csv"], cwd: dir)
        #expect(csv.stdout.hasSuffix(",\"" + message.replacingOccurrences(of: "\"", with: "\"\"") + "\"\n"), "\(csv)")
        let json = try jsonArray(try spillway(["query", "latest", "app", "--field", "message", "--json"], cwd: dir).stdout)
        #expect(json.first?["value"] as? String == message && json.first?["key"] as? String == "metrics:web-1:app")
        // series on streams.
        let series = try spillway(["query", "series", "--where", "field=usage_idle"], cwd: dir)
        #expect(series.status == 1 && series.stderr == "spillway: no series matches {field=\"usage_idle\"}\n", "\(series)")
        let all = try jsonArray(try spillway(["query", "series", "--name", "cpu", "--where", "cpu!=cpu-total", "--json"], cwd: dir).stdout)
        #expect(all.count == 4 && all.allSatisfy { ($0["labels"] as? [String: String])?["cpu"] == "cpu0" })
    }

    @Test func failuresAreOneLineAndExitOneBadArgumentsExitTwo() throws {
        let server = try RedisServer(args: ["--requirepass", "right-secret"])
        defer { server.stop(); server.removeFiles() }
        let good = try configDir(try shippedConfig(url: "redis://:right-secret@127.0.0.1:\(server.port)/0", timeseries: false,
                                                   query: "  max_series = 3\n  max_points = 50"))
        defer { try? FileManager.default.removeItem(at: good) }
        try fill(try outputConfig("redis://:right-secret@127.0.0.1:\(server.port)/0", timeseries: false), Dataset(start: Self.data.start, count: 100).records())

        func oneLine(_ r: CommandResult, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == 1 && r.stdout.isEmpty && r.stderr == "spillway: \(text)\n", "\(r)", sourceLocation: sourceLocation)
        }
        oneLine(try spillway(["query", "range", "cpu", "--field", "usage_user", "--from", "yesterday"], cwd: good),
                #"--from "yesterday" is not a time: use now, -1h (or now-1h), RFC 3339 (2025-06-01T12:00:00Z) or epoch seconds"#)
        oneLine(try spillway(["query", "range", "cpu", "--field", "usage_user", "--from", "-1h", "--to", "2025-13-01T00:00:00Z"], cwd: good),
                #"--to "2025-13-01T00:00:00Z" is not a time: use now, -1h (or now-1h), RFC 3339 (2025-06-01T12:00:00Z) or epoch seconds"#)
        let backwards = try spillway(["query", "range", "cpu", "--field", "usage_user", "--from", "now", "--to", "-1h"], cwd: good)
        #expect(backwards.status == 1 && backwards.stdout.isEmpty && backwards.stderr.hasPrefix("spillway: the range starts (")
                && backwards.stderr.contains(") after it ends (") && backwards.stderr.split(separator: "\n").count == 1, "\(backwards)")
        oneLine(try spillway(["query", "latest", "disk"], cwd: good), #"no series matches {name="disk"}"#)
        // [query] max_series = 3: four cpu series; max_points = 50.
        oneLine(try spillway(["query", "latest", "cpu", "--field", "usage_user"], cwd: good),
                "the query selects more than 3 series (max_series); narrow the selection or raise max_series")
        #expect(try spillway(["query", "latest", "cpu", "--field", "usage_user", "--max-series", "4"], cwd: good).status == 0)
        oneLine(try spillway(["query", "range", "cpu", "--field", "usage_user", "--where", "host=web-1", "--from", Self.startText,
                              "--to", "2025-06-15T15:00:00Z", "--step", "1m"], cwd: good),
                "the range holds 61 points per series, more than 50 (max_points); use a larger step or a shorter range")

        // Redis down: nothing listens there. The password never appears.
        let port = try RedisServer.freePort()
        let down = try configDir(try shippedConfig(url: "redis://:right-secret@127.0.0.1:\(port)/0", timeseries: false))
        defer { try? FileManager.default.removeItem(at: down) }
        let r = try spillway(["query", "series"], cwd: down)
        #expect(r.status == 1 && r.stdout.isEmpty && r.stderr.hasPrefix("spillway: cannot read from Redis: connection error: 127.0.0.1:\(port)") &&
                r.stderr.split(separator: "\n").count == 1 && !r.stderr.contains("right-secret"), "\(r)")
        // Refused credentials: one line, no password.
        let wrong = try configDir(try shippedConfig(url: "redis://:wrong-secret@127.0.0.1:\(server.port)/0", timeseries: false))
        defer { try? FileManager.default.removeItem(at: wrong) }
        let refused = try spillway(["query", "latest", "cpu", "--json"], cwd: wrong)
        #expect(refused.status == 1 && refused.stdout.isEmpty && refused.stderr.hasPrefix("spillway: cannot read from Redis: authentication failed: AUTH refused") &&
                refused.stderr.split(separator: "\n").count == 1 && !refused.stderr.contains("wrong-secret"), "\(refused)")

        // Bad arguments (ArgumentParser's and ours) and a bad configuration: exit 2, nothing on stdout.
        let bad: [([String], String)] = [
            (["query", "range", "cpu", "--from", "now-1h"], "Missing expected argument '--field <field>'"),
            (["query", "range", "cpu", "--field", "usage_user"], "Missing expected argument '--from <time>'"),
            (["query", "range", "cpu", "--field", "f", "--from", "-1h", "--agg", "median"], #"--agg "median": use avg, min, max, sum, count, last"#),
            (["query", "range", "cpu", "--field", "f", "--from", "-1h", "--step", "soon"], #"--step "soon" is not a duration"#),
            (["query", "range", "cpu", "--field", "f", "--from", "-1h", "--step", "0s"], #"--step "0s" is not a duration"#),
            (["query", "range", "cpu", "--field", "f", "--from", "-1h", "--max-points", "0"], "--max-points must be at least 1"),
            (["query", "latest"], "Missing expected argument '<name>'"),
            (["query", "latest", "cpu", "--where", "hostweb-1"], #"--where "hostweb-1" is not a matcher"#),
            (["query", "latest", "cpu", "--where", "host=~web-("], "--where host=~web-(: not a regular expression"),
            (["query", "series", "--json", "--csv"], "--json and --csv: choose one"),
            (["query", "series", "--lookback", "long"], #"--lookback "long" is not a duration"#),
            (["query", "series", "--frobnicate"], "Unknown option '--frobnicate'"),
            (["query", "nosuch"], "Unexpected argument 'nosuch'"),
            (["query", "series", "--max-series", "0"], "--max-series must be at least 1"),
            (["query", "series", "--config", "missing.toml"], "config file not found"),
        ]
        for (args, why) in bad {
            let r = try spillway(args, cwd: good)
            #expect(r.status == 2 && r.stdout.isEmpty && r.stderr.contains(why), "\(args): \(r)")
        }
        // The other commands keep ArgumentParser's 64 (docs/operations.md).
        #expect(try spillway(["plugins", "cpux"], cwd: good).status == 64)
        #expect(try spillway(["query", "--help"], cwd: good).status == 0)
    }
}
