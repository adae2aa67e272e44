import SpillwayPromQL
import ArgumentParser
import Foundation
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import SpillwayQuery

/// `spillway query`: reads back what the agent wrote, from the Redis `[outputs.redis]` names. The
/// reading is SpillwayQuery's; this is the command line and the output formats.
struct Query: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read back what the agent wrote: the series, their newest values, their values over a range.",
        discussion: """
            Reads the Redis [outputs.redis] names, in its format (streams or RedisTimeSeries), with its \
            credentials and TLS settings. Labels are a record's tags (host among them) plus name (the \
            measurement) and field. Exit codes: 0; 1 when the query fails (no series matches, Redis \
            cannot be reached or refuses, a bad --from/--to, a limit exceeded), with one line on \
            stderr; 2 for a bad command line or configuration.
            """,
        subcommands: [QuerySeries.self, QueryLatest.self, QueryRange.self]
    )

    /// Whether `arguments` (the process's, without the program) run a `query` command: its bad
    /// command lines exit 2, not ArgumentParser's 64.

}

/// What every query command takes.
struct QueryOptions: ParsableArguments {
    @OptionGroup var config: ConfigOptions

    @Option(name: .customLong("where"), help: ArgumentHelp(
        "A label matcher: label=value, label!=value, label=~regex or label!~regex (anchored). Repeatable: all must hold.",
        valueName: "matcher"))
    var wheres: [String] = []

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Print CSV (a header line, then one line per row).")
    var csv = false

    @Option(name: .customLong("max-series"), help: ArgumentHelp("Series one query may select (default: [query] max_series, 10000).", valueName: "n"))
    var maxSeries: Int?

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv: choose one") }
        if let maxSeries, maxSeries < 1 { throw ValidationError("--max-series must be at least 1") }
        for w in wheres {
            do throws(LabelMatcher.Invalid) { _ = try LabelMatcher.parse(w) } catch { throw ValidationError("--where \(error)") }
        }
    }

    var matchers: [LabelMatcher] { wheres.map { try! LabelMatcher.parse($0) } }

    var format: QueryOutput.Format { json ? .json : csv ? .csv : .table }

    /// The configuration (a bad one exits 2), and an engine over its Redis.
    func engine(lookback: String? = nil, maxPoints: Int? = nil) throws -> QueryEngine {
        let c = try config.load()
        var limits = QueryLimits()
        limits.maxSeries = maxSeries ?? c.query.maxSeries
        limits.maxPoints = maxPoints ?? c.query.maxPoints
        if let lookback { limits.lookbackMs = QueryTime.durationMs(lookback) ?? limits.lookbackMs }
        return QueryEngine(redis: c.redis, layout: Self.layout(c), limits: limits)
    }

    /// Where the agent with configuration `c` writes: `[outputs.redis]` and the inputs' own keys
    /// (each with the name its records get when its key has no `{name}`), and `[aggregate]` when declared.
    static func layout(_ c: Config) -> QueryLayout {
        let inputKeys = c.inputs.compactMap { i -> (key: KeyTemplate, name: String?)? in
            guard let key = i.key else { return nil }
            return (key, i.nameOverride ?? (i.input as? TailInput)?.options.parser.name)
        }
        return QueryLayout(redis: c.redis, inputKeys: inputKeys, aggregates: c.aggregate.declared ? c.aggregate : nil)
    }
}

/// A failed query: one line on stderr, exit 1.
func queryFailed(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("spillway: \(message)\n".utf8))
    return ExitCode(1)
}

func validateLookback(_ lookback: String) throws {
    guard let ms = QueryTime.durationMs(lookback), ms > 0 else {
        throw ValidationError("--lookback \"\(lookback)\" is not a duration (e.g. 5m, 1h)")
    }
}

struct QuerySeries: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "series",
        abstract: "List the series that exist, with their labels.",
        discussion: """
            RedisTimeSeries: one series per field and tag set (TS.QUERYINDEX with the matchers it can \
            apply, labels by TS.MGET WITHLABELS; without an = matcher, SCAN over the key template's \
            pattern and TS.INFO). Streams: the streams the key templates make (SCAN), each tag set and \
            field among a stream's newest entries (those within --lookback of its newest) a series.
            """
    )

    @Option(help: ArgumentHelp("Only this measurement (the label name).", valueName: "name"))
    var name: String?

    @Option(help: ArgumentHelp("Streams: the tag sets of a stream are those of its entries within this of its newest.", valueName: "duration"))
    var lookback = "5m"

    @OptionGroup var options: QueryOptions

    func validate() throws { try validateLookback(lookback) }

    func run() throws {
        let engine = try options.engine(lookback: lookback)
        let selector = Selector(name: name, options.matchers)
        do throws(QueryError) {
            let series = try engine.series(selector)
            FileHandle.standardOutput.write(Data(QueryOutput.series(series, options.format).utf8))
        } catch {
            throw queryFailed(error.description)
        }
    }
}

struct QueryLatest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latest",
        abstract: "Print the newest value of each matching series.",
        discussion: """
            RedisTimeSeries: TS.MGET LATEST WITHLABELS. Streams: each stream's newest entries \
            (XREVRANGE from the newest, back --lookback), the newest value of each tag set and field. \
            Without --field, every field.
            """
    )

    @Argument(help: ArgumentHelp("The measurement (e.g. cpu).", valueName: "name"))
    var name: String

    @Option(help: ArgumentHelp("Only this field (e.g. usage_user).", valueName: "field"))
    var field: String?

    @Option(help: ArgumentHelp("Streams: tag sets are looked for in entries within this of a stream's newest.", valueName: "duration"))
    var lookback = "5m"

    @OptionGroup var options: QueryOptions

    func validate() throws { try validateLookback(lookback) }

    func run() throws {
        let engine = try options.engine(lookback: lookback)
        let selector = Selector(name: name, field: field, options.matchers)
        do throws(QueryError) {
            let samples = try engine.latest(selector)
            FileHandle.standardOutput.write(Data(QueryOutput.latest(samples, options.format).utf8))
        } catch {
            throw queryFailed(error.description)
        }
    }
}

struct QueryRange: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "range",
        abstract: "Print a field's values over a time range, aggregated into steps.",
        discussion: """
            Buckets are --step long, aligned to the epoch, from the one holding --from to the one \
            holding --to, each read whole. Times: now, -1h (or now-1h), RFC 3339 \
            (2025-06-01T12:00:00Z, offsets and fractions allowed), or epoch seconds (13 digits or more: \
            milliseconds). RedisTimeSeries: the coarsest [outputs.redis] rollup of the same \
            aggregation whose bucket divides the step and whose retention covers the range, else the \
            raw series (TS.RANGE … LATEST AGGREGATION; --json names the key read). Streams: XRANGE in \
            pages of 1000 entries, aggregated here by entry time (the ID's milliseconds); text \
            values are skipped; with [aggregate] in the configuration, the steps spillway aggregate \
            holds final are read from its aggregates (--json: rollup, source, stream_from). Buckets \
            without samples are left out.
            """
    )

    @Argument(help: ArgumentHelp("The measurement (e.g. cpu).", valueName: "name"))
    var name: String

    @Option(help: ArgumentHelp("The field (e.g. usage_user).", valueName: "field"))
    var field: String

    // Unconditional: `--from -1h` is a value, not an option.
    @Option(parsing: .unconditional, help: ArgumentHelp("Start: -1h, now-30m (now+5m, +5m after now), RFC 3339, or epoch seconds.", valueName: "time"))
    var from: String

    @Option(parsing: .unconditional, help: ArgumentHelp("End, as --from.", valueName: "time"))
    var to = "now"

    // Unconditional: `--step -10s` reaches the check that refuses it.
    @Option(parsing: .unconditional, help: ArgumentHelp("Bucket length (e.g. 10s, 1m, 1h; a plain number is seconds).", valueName: "duration"))
    var step = "1m"

    @Option(help: ArgumentHelp("avg, min, max, sum, count or last.", valueName: "aggregation"))
    var agg = "avg"

    @Option(name: .customLong("max-points"), help: ArgumentHelp("Buckets a range may hold (default: [query] max_points, 11000).", valueName: "n"))
    var maxPoints: Int?

    @OptionGroup var options: QueryOptions

    func validate() throws {
        guard let ms = QueryTime.durationMs(step), ms > 0 else { throw ValidationError("--step \"\(step)\" is not a duration (e.g. 10s, 1m, 1h)") }
        guard Aggregation(rawValue: agg) != nil else {
            throw ValidationError("--agg \"\(agg)\": use \(Aggregation.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let maxPoints, maxPoints < 1 { throw ValidationError("--max-points must be at least 1") }
    }

    func run() throws {
        let engine = try options.engine(maxPoints: maxPoints)
        let now = wallClockNanoseconds() / 1_000_000
        guard let fromMs = QueryTime.parse(from, now: now) else { throw queryFailed(Self.badTime("--from", from)) }
        guard let toMs = QueryTime.parse(to, now: now) else { throw queryFailed(Self.badTime("--to", to)) }
        let query = RangeQuery(selector: Selector(name: name, field: field, options.matchers), from: fromMs, to: toMs,
                               step: QueryTime.durationMs(step)!, aggregation: Aggregation(rawValue: agg)!)
        do throws(QueryError) {
            let result = try engine.range(query, now: now)
            FileHandle.standardOutput.write(Data(QueryOutput.range(result, options.format).utf8))
        } catch {
            throw queryFailed(error.description)
        }
    }

    static func badTime(_ option: String, _ text: String) -> String {
        "\(option) \"\(text)\" is not a time: use now, -1h (or now-1h), RFC 3339 (2025-06-01T12:00:00Z) or epoch seconds"
    }
}
