import Foundation
import SpillwayConfig
import SpillwayCore
import Testing

/// `[aggregate]`: defaults, values, and defaults taken from `[outputs.redis]` and `[agent]`.
@Suite struct AggregateConfigs {
    func load(_ text: String, _ more: [String: String] = [:]) throws -> Config {
        let dir = try makeTree(["agent.toml": text].merging(more) { $1 })
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try loader().load(configPath: "\(dir)/agent.toml")
    }

    @Test func defaultsWithoutTheTable() throws {
        let a = try load("[[inputs.mem]]\n").aggregate
        #expect(!a.declared)
        #expect(a.streams == "metrics:*:*" && a.streamKey.text == "metrics:{host}:{name}")
        #expect(a.buckets == [AggregateConfig.Bucket(ms: 60_000, text: "1m", retentionMs: 0), AggregateConfig.Bucket(ms: 3_600_000, text: "1h", retentionMs: 0)])
        #expect(a.graceMs == 30_000 && a.group == "spillway-aggregate" && a.consumer == "testhost")
        #expect(a.key.text == "agg:{host}:{name}:{field}:{agg}:{bucket}")
        #expect(a.claimIdleMs == 60_000 && a.count == 1000 && a.batch == 10_000 && a.maxOpenBuckets == 100_000)
        #expect(a.keepMs == 600_000 && a.scanIntervalMs == 30_000 && a.pollIntervalMs == 500 && a.retentionMs == 0)
        #expect(a.statePrefix == "spillway:agg:spillway-aggregate:")
    }

    @Test func everyKey() throws {
        let c = try load("""
            [agent]
            hostname = "box"
            [aggregate]
            streams = "metrics:web-*:*"
            buckets = ["1h:30d", "10s", "1m"]
            retention = "2d"
            grace = "5s"
            group = "aggs"
            consumer = "box-2"
            key = "a/{tag.dc}/{name}/{field}/{agg}/{bucket}"
            claim_idle = "30s"
            count = 200
            batch = 2000
            max_open_buckets = 50
            keep = "0s"
            scan_interval = "1m"
            poll_interval = "100ms"
            """)
        let a = c.aggregate
        #expect(a.declared)
        #expect(a.streams == "metrics:web-*:*")
        // Sorted by length; an entry without its retention takes `retention`.
        #expect(a.buckets.map(\.text) == ["10s", "1m", "1h"])
        #expect(a.buckets.map(\.retentionMs) == [172_800_000, 172_800_000, 2_592_000_000])
        #expect(a.graceMs == 5000 && a.group == "aggs" && a.consumer == "box-2")
        #expect(a.key.namedTags == ["dc"])
        #expect(a.claimIdleMs == 30_000 && a.count == 200 && a.batch == 2000 && a.maxOpenBuckets == 50)
        #expect(a.keepMs == 0 && a.scanIntervalMs == 60_000 && a.pollIntervalMs == 100)
    }

    @Test func streamKeyAndConsumerComeFromTheOtherTables() throws {
        let c = try load("[agent]\nhostname = \"h9\"\n[outputs.redis]\nkey = \"m:{name}:{host}\"\n[aggregate]\ngrace = \"1s\"\n")
        #expect(c.aggregate.streamKey.text == "m:{name}:{host}")
        #expect(c.aggregate.streams == "m:*:*")
        #expect(c.aggregate.consumer == "h9")
        #expect(c.aggregateProblems.isEmpty)
    }

    /// Without [aggregate], what `aggregate` would run with is checked too, but only `aggregate`
    /// refuses it (`run` and `check` have nothing to say about a worker not configured).
    @Test func problemsOfTheDefaultsWithoutTheTable() throws {
        let c = try load("[outputs.redis]\nformat = \"timeseries\"\n[[inputs.mem]]\n")
        #expect(c.aggregateProblems.count == 1)
        #expect(c.aggregateProblems.first?.message.contains("format is \"timeseries\"") == true)
    }

    /// What [outputs.redis] says that aggregate cannot work with does not stop the agent: with
    /// [aggregate] declared, `check` warns (located at the table), and `aggregate` refuses.
    @Test func problemsFromOutputsRedisAreWarnings() throws {
        let c = try load("[outputs.redis]\nformat = \"timeseries\"\n\n[aggregate]\ngrace = \"1s\"\n[[inputs.mem]]\n")
        let w = try #require(c.warnings.first { $0.keyPath == "aggregate" })
        #expect(w.line == 4 && w.message.contains("format is \"timeseries\""))
        #expect(c.aggregateProblems.map(\.message) == [w.message])
        let k = try load("[outputs.redis]\nkey = \"metrics:{host}\"\nids = \"auto\"\n[aggregate]\n[[inputs.mem]]\n")
        #expect(k.warnings.contains { $0.keyPath == "aggregate" && $0.message.contains("has no {name}") })
        #expect(k.aggregateProblems.count == 1)
    }

    @Test func declaredTwice() throws {
        let diags = diagnostics { try load("[aggregate]\ngrace = \"1s\"\n", ["plugins.d/a.toml": "[aggregate]\ngroup = \"x\"\n"]) }
        #expect(diags.map(\.message).contains { $0.contains("[aggregate] is also declared in") })
    }
}
