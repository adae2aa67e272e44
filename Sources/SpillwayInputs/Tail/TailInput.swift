import SpillwayConfig
import SpillwayCore

/// `[[inputs.tail]]`'s options.
public struct TailOptions: Sendable {
    /// `files`: globs (`*`, `?`, `[a-z]`, `**`) of the files to follow.
    public var files: [Glob]
    /// `exclude`: globs of paths (or, without a `/`, of file names) never followed.
    public var exclude: [Glob] = []
    /// `watch_interval`: how often `files` is evaluated again (new files, rotation). Default 1s.
    public var watchInterval: Int64 = 1_000_000_000
    /// `from_beginning`: read files present at the input's first start from their start. Default false.
    public var fromBeginning = false
    public var parser: LineParser
    /// `max_line_bytes`: a longer line is cut there and marked `truncated=true`. Default 64KiB.
    public var maxLineBytes = 64 << 10
    /// `partial_timeout`: a last line without its newline is emitted once the file has not changed
    /// for this long. Default 5s.
    public var partialTimeout: Int64 = 5_000_000_000
    /// `rotate_wait`: a file rotated away (renamed, deleted) is read until it has not grown for this
    /// long, then let go. Default 5s.
    public var rotateWait: Int64 = 5_000_000_000
    /// `max_open_files`: descriptors held at most; beyond that, idle files take turns. Default 256.
    public var maxOpenFiles = 256
    /// How often files are polled for new data.
    public var pollInterval: Int64 = 100_000_000

    public init(files: [Glob], parser: LineParser = LineParser()) {
        self.files = files
        self.parser = parser
    }

    /// Whether `path` is one this input follows by its patterns (its offsets are this input's).
    public func covers(_ path: String) -> Bool {
        files.contains { $0.matches(path) } && !GlobWalker.isExcluded(path, exclude)
    }

    /// Names this input across restarts: files present at its first start are read from their end.
    public var identity: String {
        "tail:" + files.map(\.pattern).sorted().joined(separator: ",")
    }
}

/// `tail`: follows log files. It is not collected on a schedule: the agent runs it on a thread of
/// its own (see `Tailer`); `gather` reports that.
public struct TailInput: Input {
    public var options: TailOptions

    public init(options: TailOptions) { self.options = options }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        throw InputError("tail follows files continuously; it is run by `spillway run`, not collected once")
    }

    public static let descriptor = InputDescriptor(name: "tail", summary: "lines appended to log files (raw, json, logfmt), through rotation",
                                                   scheduled: false) { r in
        // A relative pattern is relative to the config file's directory.
        let patterns = r.pathGlobs("files")
        if patterns.isEmpty {
            r.error("files", "tail needs at least one file pattern", fix: "add files = [\"/var/log/app/*.log\"]")
        }
        let name = r.string("name", default: "log")
        if name.isEmpty { r.error("name", "must not be empty", fix: "leave it out to use \"log\"") }
        let formatText = r.string("format", default: "raw")
        let format = LogFormat(rawValue: formatText)
        if format == nil {
            let hint = closestMatch(to: formatText, in: LogFormat.allCases.map(\.rawValue)).map { " (did you mean \"\($0)\"?)" } ?? ""
            r.error("format", "unknown format \"\(formatText)\"\(hint)", fix: "use \"raw\", \"json\" or \"logfmt\"")
        }
        let tagKeys = r.stringArray("tag_keys", default: [])
        let timestampKey = r.optionalString("timestamp_key")
        var timestampFormat = TimestampFormat.rfc3339
        if r.has("timestamp_format") {
            let text = r.string("timestamp_format", default: "rfc3339")
            let (parsed, problem) = TimestampFormat.parse(text)
            if let parsed { timestampFormat = parsed } else {
                r.error("timestamp_format", problem ?? "invalid", fix: "use \"unix\", \"unix_ms\", \"unix_us\", \"unix_ns\", \"rfc3339\" or a pattern such as \"%Y-%m-%d %H:%M:%S\"")
            }
            if timestampKey == nil {
                r.error("timestamp_format", "timestamp_format without timestamp_key does nothing", fix: "add timestamp_key = \"time\" (the field holding the time)")
            }
        }
        if (timestampKey != nil || !tagKeys.isEmpty), format == .raw {
            r.error(timestampKey != nil ? "timestamp_key" : "tag_keys", "format \"raw\" has no fields but message",
                    fix: "set format = \"json\" or \"logfmt\"")
        }
        var options = TailOptions(files: patterns, parser: LineParser(name: name, format: format ?? .raw, tagKeys: tagKeys,
                                                                      timestampKey: timestampKey, timestampFormat: timestampFormat))
        options.exclude = r.pathGlobs("exclude", onlyWithSlash: true)
        options.watchInterval = r.duration("watch_interval", default: options.watchInterval, minimum: 10_000_000)
        options.fromBeginning = r.bool("from_beginning", default: false)
        options.maxLineBytes = Int(r.size("max_line_bytes", default: Int64(options.maxLineBytes), minimum: 16))
        if options.maxLineBytes > 64 << 20 {
            r.error("max_line_bytes", "at most 64MiB", fix: "use a smaller max_line_bytes")
        }
        options.partialTimeout = r.duration("partial_timeout", default: options.partialTimeout, minimum: 1_000_000)
        options.rotateWait = r.duration("rotate_wait", default: options.rotateWait, minimum: 0)
        options.maxOpenFiles = r.int("max_open_files", default: options.maxOpenFiles, range: 1...65536)
        return TailInput(options: options)
    }
}
