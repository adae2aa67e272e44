import SpillwayCore
import TOMLKit

/// `[agent]`: settings that apply to the whole agent.
public struct AgentConfig: Sendable, Equatable {
    /// The `host` tag on every record. Default: the machine's host name.
    public var hostname: String
    /// Default collection interval for inputs, nanoseconds. Default 10s.
    public var interval: Int64 = 10_000_000_000
    /// How often batches are flushed, nanoseconds. Default 1s.
    public var flushInterval: Int64 = 1_000_000_000
    /// Records per batch (a batch also flushes as soon as this many wait). Default 1000.
    public var batchSize: Int = 1000
    /// Each collection is delayed by a random 0…jitter, nanoseconds. Default 0.
    public var jitter: Int64 = 0
    /// Where the agent keeps its state, absolute (a relative `data_dir` is resolved against the
    /// config file's directory); nil means the default (see `DataDirectory`).
    public var dataDir: String?
    /// Where `data_dir` was set (file, line and key path; empty message), for `check`'s problems.
    public var dataDirLocation: Diagnostic?
    /// Root of procfs. Default `/proc`, or host_root + `/proc` when host_root is set.
    public var procRoot: String = "/proc"
    /// Root of sysfs. Default `/sys`, or host_root + `/sys` when host_root is set.
    public var sysRoot: String = "/sys"
    /// The host's `/` as mounted in a container (`host_root`, e.g. `/host`), without a trailing
    /// slash; empty (the default, or `/`) when the agent runs on the host itself.
    public var hostRoot: String = ""
    /// Tags added to every record (`[agent.tags]`), sorted by key.
    public var tags: [Tag] = []
    /// How `run` writes its log lines: `text`, `logfmt` or `json`. Default `text`.
    public var logFormat: String = "text"
    /// Records waiting for Redis, at most. Default 100000.
    public var bufferLimit: Int = 100_000
    /// `internal`: whether the agent's own records (`spillway`, `spillway_input`, `spillway_tail`)
    /// are collected every `interval`. Default true.
    public var internalMetrics = true
    /// `http_listen`: where `/health` and `/metrics` are served; nil (the default) serves nothing.
    public var httpListen: HTTPListen?

    public init(hostname: String) { self.hostname = hostname }

    public static let logFormats = ["text", "logfmt", "json"]

    /// A root without its trailing slashes; `/` (the real root) becomes empty.
    public static func normalizedRoot(_ path: String) -> String {
        var p = Substring(path)
        while p.hasSuffix("/") { p = p.dropLast() }
        return String(p)
    }
}

/// One `[[inputs.NAME]]` table, ready to run.
public struct InputInstance: Sendable {
    /// The plugin name (`cpu`).
    public var plugin: String
    /// Where it was declared.
    public var file: String
    public var line: Int?
    /// Collection interval, nanoseconds (the input's `interval`, else `[agent] interval`).
    public var interval: Int64
    /// Replaces the measurement name of every record it emits.
    public var nameOverride: String?
    /// The instance's own `tags`.
    public var tags: [Tag]
    /// The instance's own Redis key template (`key`), overriding `[outputs.redis] key`.
    public var key: KeyTemplate?
    /// The instance's own stream `maxlen`, overriding `[outputs.redis] maxlen`.
    public var maxlen: Int?
    /// The input itself, with its options applied.
    public var input: any Input

    public init(plugin: String, file: String, line: Int?, interval: Int64, nameOverride: String? = nil, tags: [Tag] = [],
                key: KeyTemplate? = nil, maxlen: Int? = nil, input: any Input) {
        self.plugin = plugin
        self.file = file
        self.line = line
        self.interval = interval
        self.nameOverride = nameOverride
        self.tags = tags
        self.key = key
        self.maxlen = maxlen
        self.input = input
    }

    /// The location, as `file:line`.
    public var location: String { line.map { "\(file):\($0)" } ?? file }
}

/// The whole, validated configuration.
public struct Config: Sendable {
    public var agent: AgentConfig
    public var inputs: [InputInstance]
    /// `[outputs.redis]` (its defaults when the table is absent).
    public var redis: RedisOutputConfig
    /// `[breaker]`, `[buffer]`, `[status]`.
    public var survive = SurviveConfig()
    /// `[aggregate]` (its defaults when the table is absent): what `spillway aggregate` does.
    public var aggregate: AggregateConfig
    /// What keeps `spillway aggregate` from working with this configuration: what `[outputs.redis]`
    /// says (format = "timeseries", a stream key without {name}: `check` warns when `[aggregate]` is
    /// declared), and, without the table, its defaults' problems (with it, they are errors of the
    /// configuration). `aggregate` refuses to start on them.
    public var aggregateProblems: [Diagnostic] = []
    /// `[query]`: the bounds of `spillway query`.
    public var query = QueryConfig()
    /// The files read, in order: the config file, then the drop-ins.
    public var files: [String]
    /// Things that work but are likely wrong (`check` prints them, `run` logs them).
    public var warnings: [Diagnostic]

    public init(agent: AgentConfig, inputs: [InputInstance], redis: RedisOutputConfig, files: [String], warnings: [Diagnostic]) {
        self.agent = agent
        self.inputs = inputs
        self.redis = redis
        self.files = files
        self.warnings = warnings
        self.aggregate = AggregateConfig(streamKey: redis.key, consumer: agent.hostname)
    }
}

/// A built-in input: its name, a one-line summary, and a factory that reads its own options.
public struct InputDescriptor: Sendable {
    public let name: String
    public let summary: String
    /// Reads the input's options from its table (reporting problems through the reader) and returns
    /// the input. The loader has already taken `interval`, `name_override` and `tags`, and calls
    /// `finish()` after, which reports unknown keys.
    public let make: @Sendable (inout OptionReader) -> any Input
    /// False for an input that runs continuously (tail): it takes no `interval`.
    public let scheduled: Bool

    public init(name: String, summary: String, scheduled: Bool = true, make: @escaping @Sendable (inout OptionReader) -> any Input) {
        self.name = name
        self.summary = summary
        self.scheduled = scheduled
        self.make = make
    }

    /// Every option a `[[inputs.NAME]]` table of this input takes, in the order they are read, with
    /// its default as TOML ("none" when it has none): found by reading an empty table, so the list
    /// cannot drift from the code.
    public var options: [(key: String, default: String)] {
        let file = SourceFile(path: "<\(name)>", text: "")
        var r = OptionReader(table: TOMLTable(), path: "inputs.\(name)[0]", file: file, sink: DiagnosticSink(), baseDirectory: "/")
        _ = ConfigLoader.readInstance(self, &r)
        return r.asked
    }
}

/// `[query]`: what one `spillway query` may read.
public struct QueryConfig: Sendable, Equatable {
    /// `max_series`: series one query may select. Default 10000.
    public var maxSeries = 10_000
    /// `max_points`: points per series one range may return. Default 11000 (Prometheus's limit).
    public var maxPoints = 11_000

    public init() {}

    static func read(_ r: inout OptionReader, into c: inout QueryConfig) {
        c.maxSeries = r.int("max_series", default: c.maxSeries, range: 1...10_000_000)
        c.maxPoints = r.int("max_points", default: c.maxPoints, range: 1...10_000_000)
    }
}
