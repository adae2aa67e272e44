import SpillwayConfig
import SpillwayCore
import Synchronization

/// `[[inputs.exec]]`'s options.
public struct ExecOptions: Sendable {
    public var command: ExecCommand
    /// `data_format`: `influx` (default) or `json`.
    public var dataFormat: ExecDataFormat = .influx
    /// `timeout`: a run still going after this is stopped (SIGTERM to its process group, then
    /// SIGKILL after `kill_grace`) and is an error. Default 5s.
    public var timeout: Int64 = 5_000_000_000
    /// `kill_grace`: between SIGTERM and SIGKILL. Default 2s.
    public var killGrace: Int64 = 2_000_000_000
    /// `max_output_bytes`: stdout beyond this stops the command and fails the run. Default 4MiB.
    public var maxOutput = 4 << 20
    /// `max_stderr_bytes`: stderr kept and logged per run; the rest is read and counted. Default 1KiB.
    public var maxStderr = 1 << 10

    public init(command: ExecCommand) { self.command = command }

    public var limits: ExecLimits { ExecLimits(timeout: timeout, killGrace: killGrace, maxOutput: maxOutput, maxStderr: maxStderr) }
}

/// What a run left besides records: its stderr for the log, and the bad parts of its output left
/// out beyond those listed in the report (counted, not listed).
public struct ExecRunNote: Sendable {
    public var stderr: String?
    public var stderrDropped = 0
    public var unlisted = 0
}

/// `exec`: runs a command at each interval and reads records from its stdout. `spillway run` runs
/// it through `ExecService` (the command is awaited, not blocking the collector); `gather` is for
/// `spillway once`.
public struct ExecInput: Input {
    public var options: ExecOptions

    public init(options: ExecOptions) { self.options = options }

    /// One run at `now`: its records (no timestamp → `now`), bad parts in `report.skipped`. Throws
    /// for a run that failed: not started, non-zero exit, killed by a signal, past its timeout,
    /// output too large, or JSON that does not parse. Records of a failed run are not kept.
    public func collect(now: Int64, stop: ExecStop, into records: inout [Record], report: inout InputReport) async throws(InputError) -> ExecRunNote {
        let result: ExecResult
        do {
            result = try await ExecProcess.run(options.command, limits: options.limits, stop: stop)
        } catch {
            throw InputError("cannot start \(options.command.display): \(error)")
        }
        var note = ExecRunNote(stderr: result.stderr.isEmpty ? nil : String(decoding: result.stderr, as: UTF8.self),
                               stderrDropped: result.stderrDropped)
        func failed(_ what: String) -> InputError {
            var text = "\(options.command.display) (pid \(result.pid)) \(what)"
            if let stderr = note.stderr { text += "; stderr: \(ExecOutput.quote(Array(stderr.utf8)))" }
            return InputError(text)
        }
        if result.stopped { throw failed("stopped: the agent is stopping") }
        if result.timedOut { throw failed("ran past its timeout of \(Units.formatDuration(options.timeout)) and was stopped (\(result.end))") }
        if result.outputTooLarge { throw failed("printed more than \(options.maxOutput) bytes and was stopped (max_output_bytes); nothing kept") }
        if result.end != .exited(0) {
            throw failed("\(result.end); its output is not kept")
        }
        note.unlisted = try ExecOutput.parse(result.output, format: options.dataFormat, now: now, source: options.command.display,
                                             into: &records, report: &report)
        return note
    }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        // `spillway once` only, which gathers one input at a time: this thread waits for the run,
        // whose tasks need a free thread of the concurrency pool (swift-subprocess ends every run
        // with an unstructured task). Never called from many pool threads at once: `spillway run`
        // awaits `collect` in ExecService instead.
        let box = Mutex<(done: Bool, records: [Record], report: InputReport, error: InputError?)>((false, [], InputReport(), nil))
        let lock = ConditionLock()
        let input = self
        Task.detached {
            var r: [Record] = []
            var rep = InputReport()
            var failure: InputError?
            do throws(InputError) {
                let note = try await input.collect(now: context.now, stop: ExecStop(), into: &r, report: &rep)
                if note.unlisted > 0 {
                    rep.skip(.init(path: input.options.command.display, kind: "bad line",
                                   message: "\(note.unlisted) more bad parts left out, not listed"), count: note.unlisted)
                }
            } catch {
                failure = error
            }
            let (rr, rp, ee) = (r, rep, failure)
            lock.withLock {
                box.withLock { $0 = (true, rr, rp, ee) }
                lock.broadcast()
            }
        }
        lock.withLock {
            while !box.withLock({ $0.done }) { lock.wait() }
        }
        let out = box.withLock { $0 }
        records.append(contentsOf: out.records)
        report.merge(out.report)
        if let error = out.error { throw error }
    }

    static func readCommand(_ r: inout OptionReader) -> ExecCommand {
        var argv = r.stringArray("command", default: [])
        if argv.isEmpty || argv[0].isEmpty {
            r.error("command", "needs the program and its arguments", fix: "command = [\"/usr/local/bin/probe\", \"--json\"] (run directly, not through a shell)")
        }
        if argv.contains(where: { $0.utf8.contains(0) }) { r.error("command", "an argument contains a NUL byte") }
        let env = r.stringTable("env")
        for tag in env where tag.key.contains("=") || tag.key.utf8.contains(0) || tag.value.utf8.contains(0) {
            r.error("env", "variable \"\(tag.key)\": names cannot hold \"=\", and neither names nor values a NUL byte")
        }
        guard !argv.isEmpty, !argv[0].isEmpty else { return ExecCommand(argv: ["/bin/false"], env: env) }
        // A relative path (with a "/") is relative to the config file's directory, as tail's files.
        if argv[0].contains("/"), !argv[0].hasPrefix("/") {
            var rel = Substring(argv[0])
            while rel.hasPrefix("./") { rel = rel.dropFirst(2) }
            argv[0] = r.baseDirectory + "/" + rel
        }
        return ExecCommand(argv: argv, env: env)
    }

    static func readFormat(_ r: inout OptionReader) -> ExecDataFormat {
        let text = r.string("data_format", default: "influx")
        guard let format = ExecDataFormat(rawValue: text) else {
            let hint = closestMatch(to: text, in: ExecDataFormat.allCases.map(\.rawValue)).map { " (did you mean \"\($0)\"?)" } ?? ""
            r.error("data_format", "unknown data_format \"\(text)\"\(hint)", fix: "use \"influx\" (line protocol) or \"json\"")
            return .influx
        }
        return format
    }

    public static let descriptor = InputDescriptor(name: "exec", summary: "runs a command at each interval and reads line protocol or JSON from its stdout") { r in
        var options = ExecOptions(command: readCommand(&r))
        options.dataFormat = readFormat(&r)
        options.timeout = r.duration("timeout", default: options.timeout, minimum: 1_000_000)
        options.killGrace = r.duration("kill_grace", default: options.killGrace, minimum: 0)
        options.maxOutput = Int(r.size("max_output_bytes", default: Int64(options.maxOutput), minimum: 1))
        if options.maxOutput > 256 << 20 { r.error("max_output_bytes", "at most 256MiB", fix: "use a smaller max_output_bytes") }
        options.maxStderr = Int(r.size("max_stderr_bytes", default: Int64(options.maxStderr), minimum: 0))
        if options.maxStderr > 1 << 20 { r.error("max_stderr_bytes", "at most 1MiB", fix: "use a smaller max_stderr_bytes") }
        return ExecInput(options: options)
    }
}

/// `[[inputs.execd]]`'s options.
public struct ExecdOptions: Sendable {
    public var command: ExecCommand
    public var dataFormat: ExecDataFormat = .influx
    /// `restart_delay`: wait before the first restart after the process ended; doubled at each
    /// restart up to `max_restart_delay`, back to this once a start has lived `max_restart_delay`.
    public var restartDelay: Int64 = 1_000_000_000
    public var maxRestartDelay: Int64 = 60_000_000_000
    /// `kill_grace`: between SIGTERM and SIGKILL at stop and reload. Default 5s.
    public var killGrace: Int64 = 5_000_000_000
    /// `max_line_bytes`: a longer stdout line is dropped and counted. Default 64KiB.
    public var maxLineBytes = 64 << 10
    /// `max_stderr_bytes`: each stderr line logged is cut there. Default 1KiB.
    public var maxStderrLine = 1 << 10
    /// `stderr_lines_per_minute`: stderr lines logged per minute; the others are counted. Default 10.
    public var stderrLinesPerMinute = 10

    public init(command: ExecCommand) { self.command = command }
}

/// `execd`: a long-running process whose stdout lines are records. `spillway run` runs it in
/// `ExecService`; it is not collected on a schedule.
public struct ExecdInput: Input {
    public var options: ExecdOptions

    public init(options: ExecdOptions) { self.options = options }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        throw InputError("execd runs a long-lived process; it is run by `spillway run`, not collected once")
    }

    public static let descriptor = InputDescriptor(name: "execd", summary: "a long-running process whose stdout lines are records (line protocol or JSON)",
                                                   scheduled: false) { r in
        var options = ExecdOptions(command: ExecInput.readCommand(&r))
        options.dataFormat = ExecInput.readFormat(&r)
        options.restartDelay = r.duration("restart_delay", default: options.restartDelay, minimum: 10_000_000)
        options.maxRestartDelay = r.duration("max_restart_delay", default: max(options.maxRestartDelay, options.restartDelay), minimum: 10_000_000)
        if options.maxRestartDelay < options.restartDelay {
            r.error("max_restart_delay", "shorter than restart_delay", fix: "make it at least restart_delay")
        }
        options.killGrace = r.duration("kill_grace", default: options.killGrace, minimum: 0)
        options.maxLineBytes = Int(r.size("max_line_bytes", default: Int64(options.maxLineBytes), minimum: 16))
        if options.maxLineBytes > 64 << 20 { r.error("max_line_bytes", "at most 64MiB", fix: "use a smaller max_line_bytes") }
        options.maxStderrLine = Int(r.size("max_stderr_bytes", default: Int64(options.maxStderrLine), minimum: 16))
        if options.maxStderrLine > 1 << 20 { r.error("max_stderr_bytes", "at most 1MiB", fix: "use a smaller max_stderr_bytes") }
        options.stderrLinesPerMinute = r.int("stderr_lines_per_minute", default: options.stderrLinesPerMinute, range: 0...10000)
        return ExecdInput(options: options)
    }
}
