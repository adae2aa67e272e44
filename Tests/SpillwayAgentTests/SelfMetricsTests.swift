import Foundation
import RedisSink
import SpillwayAgent
import SpillwayConfig
import SpillwayCore
import Testing

/// An input that returns what it is told to, or fails.
struct Scripted: Input {
    var records: Int
    var fails: Bool
    func gather(into out: inout [Record], report: inout InputReport, context: InputContext) throws {
        for i in 0..<records { out.append(Record(name: "x", fields: [Field("v", .int(Int64(i)))], timestamp: context.now)) }
        if fails { throw InputError("scripted failure") }
    }
}

func instance(_ plugin: String, line: Int, _ input: any Input = Scripted(records: 0, fails: false)) -> InputInstance {
    InputInstance(plugin: plugin, file: "agent.toml", line: line, interval: 1_000_000_000, input: input)
}

func sampleFigures() -> AgentFigures {
    var f = AgentFigures()
    f.counters = AgentFigures.counterNames.enumerated().map { ($0.element, Int64($0.offset + 1)) }
    f.queueLength = 11
    f.backlogRecords = 12
    f.backlogBytes = 1300
    f.breakerState = "closed"
    var cpu = InputFigures(input: "cpu", at: "agent.toml:3")
    cpu.lastGatherNs = 1_700_000_000_500_000_000
    cpu.durationNs = 2_500_000
    cpu.errors = 4
    cpu.records = 90
    f.inputs = [cpu, InputFigures(input: "tail", at: "agent.toml:9")]
    f.lags = [TailLag(at: "agent.toml:9", path: "/var/log/a \"b\".log", bytes: 4096)]
    return f
}

@Suite struct SelfMetricsTests {
    /// The internal input's records: one `spillway` with every counter and gauge, one
    /// `spillway_input` per instance, one `spillway_tail` per file, all at the collection's tick.
    @Test func internalRecords() {
        let records = sampleFigures().records(now: 42)
        #expect(records.map(\.name) == ["spillway", "spillway_input", "spillway_input", "spillway_tail"])
        #expect(records.allSatisfy { $0.timestamp == 42 })
        let agent = Dictionary(uniqueKeysWithValues: records[0].fields.map { ($0.key, $0.value) })
        #expect(agent["collected"] == .int(1) && agent["written"] == .int(2) && agent["replayed"] == .int(3))
        #expect(agent["duplicates"] == .int(4) && agent["rejected"] == .int(5) && agent["dropped"] == .int(6))
        #expect(agent["spilled"] == .int(7) && agent["input_errors"] == .int(8))
        #expect(agent["queue_length"] == .int(11) && agent["backlog_records"] == .int(12) && agent["backlog_bytes"] == .int(1300))
        #expect(agent["breaker_state"] == .int(0))
        #expect(records[1].tags == [Tag("at", "agent.toml:3"), Tag("input", "cpu")])
        let cpu = Dictionary(uniqueKeysWithValues: records[1].fields.map { ($0.key, $0.value) })
        #expect(cpu["errors"] == .int(4) && cpu["records"] == .int(90) && cpu["gather_seconds"] == .double(0.0025))
        #expect(cpu["last_gather_ns"] == .int(1_700_000_000_500_000_000))
        // Never collected yet: no last_gather_ns.
        #expect(!records[2].fields.contains { $0.key == "last_gather_ns" })
        #expect(records[3].tags == [Tag("at", "agent.toml:9"), Tag("path", "/var/log/a \"b\".log")])
        #expect(records[3].fields == [Field("lag_bytes", .int(4096))])
    }

    @Test func breakerNumbersAndHealth() {
        var f = sampleFigures()
        #expect(f.health.healthy && f.health.reason.contains("draining a backlog of 12 records"))
        f.backlogRecords = 0
        #expect(f.health == (true, "ok: breaker closed\n"))
        f.breakerState = "open"
        f.lastError = "connection error: refused"
        #expect(f.breakerNumber == 2 && !f.health.healthy)
        #expect(f.health.reason == "unhealthy: breaker open, backlog 0 records, last error: connection error: refused\n")
        f.breakerState = "half_open"
        #expect(f.breakerNumber == 1 && !f.health.healthy && f.health.reason.contains("probing"))
    }

    /// The exposition parsed back: every sample's value, a HELP and TYPE per family, label values
    /// escaped.
    @Test func exposition() throws {
        let text = String(decoding: MetricsExposition.render(sampleFigures()), as: UTF8.self)
        var samples: [String: Double] = [:]
        var types: [String: String] = [:]
        var helps = Set<String>()
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let p = line.split(separator: " ")
                types[String(p[2])] = String(p[3])
            } else if line.hasPrefix("# HELP ") {
                helps.insert(String(line.split(separator: " ")[2]))
            } else {
                let cut = try #require(line.lastIndex(of: " "))
                let value: Double? = Double(String(line[line.index(after: cut)...]))
                #expect(value != nil, "\(line)")
                samples[String(line[..<cut])] = value ?? .nan
            }
        }
        #expect(samples["spillway_collected_total"] == 1 && samples["spillway_written_total"] == 2)
        #expect(samples["spillway_input_errors_total"] == 8 && samples["spillway_spilled_total"] == 7)
        #expect(samples["spillway_queue_length"] == 11 && samples["spillway_backlog_records"] == 12)
        #expect(samples["spillway_backlog_bytes"] == 1300 && samples["spillway_breaker_state"] == 0)
        #expect(samples[#"spillway_gather_errors_total{input="cpu",at="agent.toml:3"}"#] == 4)
        #expect(samples[#"spillway_gather_records_total{input="cpu",at="agent.toml:3"}"#] == 90)
        #expect(samples[#"spillway_gather_duration_seconds{input="cpu",at="agent.toml:3"}"#] == 0.0025)
        #expect(samples[#"spillway_gather_last_timestamp_seconds{input="cpu",at="agent.toml:3"}"#] == 1_700_000_000.5)
        #expect(samples[#"spillway_gather_last_timestamp_seconds{input="tail",at="agent.toml:9"}"#] == 0)
        #expect(samples[#"spillway_tail_lag_bytes{at="agent.toml:9",path="/var/log/a \"b\".log"}"#] == 4096, "\(text)")
        #expect(samples.count == 12 + 4 * 2 + 1, "\(samples.keys.sorted())")
        for family in types.keys { #expect(helps.contains(family), "\(family) has no HELP") }
        #expect(types.filter { $0.key.hasSuffix("_total") }.allSatisfy { $0.value == "counter" })
        #expect(types.filter { !$0.key.hasSuffix("_total") }.allSatisfy { $0.value == "gauge" })
        #expect(types.keys.allSatisfy { $0.hasPrefix("spillway_") })
    }

    /// Per-instance figures carry across a reload for instances that stay, and are forgotten for
    /// removed ones; the collector's loop fills them (records, errors, duration, when).
    @Test func perInputFiguresAcrossReloads() async {
        let stats = CollectorStats()
        let a = instance("cpu", line: 1), b = instance("mem", line: 2)
        stats.begin(instances: [a, b])
        stats.gathered(instance: a, at: 100, duration: 7, records: 3, errors: 1)
        stats.gathered(instance: a, at: 200, duration: 5, records: 2, errors: 0)
        stats.setLags(at: "agent.toml:2", [TailLag(at: "agent.toml:2", path: "/x", bytes: 9)])
        var figures = stats.inputFigures
        #expect(figures.map(\.input) == ["cpu", "mem"])
        #expect(figures[0].lastGatherNs == 200 && figures[0].durationNs == 5 && figures[0].records == 5 && figures[0].errors == 1)
        #expect(figures[1].lastGatherNs == nil && figures[1].records == 0)
        // Reload: mem removed, disk added.
        let c = instance("disk", line: 3)
        stats.begin(instances: [a, c])
        figures = stats.inputFigures
        #expect(figures.map(\.input) == ["cpu", "disk"] && figures[0].records == 5 && figures[0].lastGatherNs == 200)
        #expect(stats.tailLags.isEmpty)
    }

    /// The internal input, run as an instance: its records are the figures of its source.
    @Test func internalInputThroughAnInstance() {
        let writer = WriterStats(), collector = CollectorStats()
        let metrics = SelfMetrics(writerStats: writer, collectorStats: collector)
        let queue = RecordQueue(limit: 100, batchSize: 10)
        metrics.use(queue: queue)
        _ = queue.push([QueuedRecord(record: Record(name: "x", fields: [Field("v", .int(1))], timestamp: 1), route: 0)])
        var agent = AgentConfig(hostname: "h")
        agent.interval = 2_000_000_000
        var inst = metrics.internalInstance(agent: agent)
        #expect(inst.plugin == "internal" && inst.location == "[agent] internal" && inst.interval == 2_000_000_000)
        collector.begin(instances: [inst])
        var out: [Record] = []
        var report = InputReport()
        #expect(inst.collect(agent: agent, now: 5_000, into: &out, report: &report) == nil)
        #expect(out.first?.name == "spillway" && out.first?.tags == [Tag("host", "h")])
        let fields = Dictionary(uniqueKeysWithValues: out[0].fields.map { ($0.key, $0.value) })
        #expect(fields["collected"] == .int(1) && fields["queue_length"] == .int(1) && fields["written"] == .int(0))
        #expect(out.contains { $0.name == "spillway_input" && $0.tags.contains(Tag("input", "internal")) })
    }
}
