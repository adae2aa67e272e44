import ArgumentParser
import Foundation
import Logging
import RedisSink
import ServiceLifecycle
import SpillwayAgent
import SpillwayBuildInfo
import SpillwayConfig
import SpillwayCore
import SpillwayInputs

@main
struct Spillway: AsyncParsableCommand {
    /// The version: the one place it is written (the Makefile reads it from here for `make deb`).
    static let version = "0.1.0"
    /// Stamped by `make release` / `install` / `deb`; "unknown" from a plain `swift build`.
    static let commit = String(cString: spillway_build_commit())
    static let buildDate = String(cString: spillway_build_date())

    static let configuration = CommandConfiguration(
        commandName: "spillway",
        abstract: "A host telemetry agent: collects host metrics and log lines and writes them to Redis.",
        version: "\(version) (commit \(commit), built \(buildDate))",
        subcommands: [Run.self, Once.self, Check.self, Status.self, Query.self, Serve.self, Aggregate.self, Plugins.self, ConfigSample.self],
        defaultSubcommand: nil
    )

    /// As ArgumentParser's, after one thing first: SIGHUP is ignored from the process's first
    /// instant, so a reload sent right after a start (systemctl reload, logrotate) never ends the
    /// agent before `run` listens for it.
    static func main() async {
        signal(SIGHUP, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            // `query` and `serve` say "bad arguments" with 2 (as a bad configuration), not ArgumentParser's 64.
            if ["query", "serve"].contains(CommandLine.arguments.dropFirst().first ?? ""), exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Where the configuration comes from; shared by every command.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The agent's config file.",
        discussion: "Default: ./agent.toml when it exists, else /etc/spillway/agent.toml.",
        valueName: "file"))
    var config: String?

    @Option(name: .customLong("config-dir"), help: ArgumentHelp(
        "Directory of drop-in *.toml files merged after the config file, in file-name order. Default: plugins.d beside the config file.",
        valueName: "dir"))
    var configDir: String?

    var configPath: String {
        if let config { return config }
        return FileManager.default.fileExists(atPath: "agent.toml") ? "agent.toml" : "/etc/spillway/agent.toml"
    }

    /// Loads and validates the configuration; on any problem prints every diagnostic and exits 2.
    func load() throws -> Config {
        do {
            return try loadOrThrow()
        } catch {
            FileHandle.standardError.write(Data("spillway: \(error.description)\n".utf8))
            throw ExitCode(2)
        }
    }

    func loadOrThrow() throws(ConfigError) -> Config {
        try ConfigLoader(registry: InputRegistry.all).load(configPath: configPath, configDir: configDir)
    }
}

/// Prints problems as the loader does (`spillway: N problems in the configuration:` and one line
/// each) and exits 2.
func failWithProblems(_ problems: [Diagnostic]) -> ExitCode {
    FileHandle.standardError.write(Data("spillway: \(ConfigError(diagnostics: problems).description)\n".utf8))
    return ExitCode(2)
}

/// An error as one line: Foundation's file errors (`Error Domain=NSCocoaErrorDomain Code=513 …`)
/// become the system's reason, e.g. "Permission denied".
func oneLine(_ error: any Error) -> String {
    let ns = error as NSError
    if ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain {
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        switch ns.code {
        case CocoaError.fileWriteNoPermission.rawValue, CocoaError.fileReadNoPermission.rawValue: return "Permission denied"
        case CocoaError.fileWriteVolumeReadOnly.rawValue: return "Read-only file system"
        case CocoaError.fileWriteOutOfSpace.rawValue: return "No space left on device"
        case CocoaError.fileNoSuchFile.rawValue, CocoaError.fileReadNoSuchFile.rawValue: return "No such file or directory"
        default: break
        }
    }
    return "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
}

struct Once: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run each declared input once and print its records as Influx line protocol.",
        discussion: """
            No Redis is involved: this shows what the agent would send. Inputs that report changes \
            (cpu) are sampled twice, --sample-interval apart. Records are printed in a stable order: \
            by name, then by tags. An input that fails is reported on stderr and the others still \
            print; the exit code is then 1. Parts an input left out (a malformed line, an \
            unreachable mount point) and its notes are reported on stderr too, with exit code 0.
            """
    )

    @OptionGroup var options: ConfigOptions

    @Option(name: .customLong("input"), help: ArgumentHelp("Run only inputs of this plugin (repeatable).", valueName: "name"))
    var inputNames: [String] = []

    @Option(name: .customLong("sample-interval"), help: ArgumentHelp("Time between the two samples of cpu.", valueName: "duration"))
    var sampleInterval: String = "500ms"

    func run() async throws {
        var config = try options.load()
        guard let gap = Units.parseDuration(sampleInterval) else {
            throw ValidationError("--sample-interval \"\(sampleInterval)\" is not a duration (e.g. 500ms, 1s)")
        }
        let known = Set(InputRegistry.all.map(\.name))
        for name in inputNames where !known.contains(name) {
            let hint = closestMatch(to: name, in: Array(known)).map { "; did you mean \"\($0)\"?" } ?? ""
            throw ValidationError("--input \(name): no such input\(hint)")
        }
        // Continuous inputs (tail follows files, execd keeps a process running) are not collected
        // once: left out here.
        let continuous = Set(InputRegistry.all.filter { !$0.scheduled }.map(\.name))
        for name in inputNames where continuous.contains(name) {
            throw ValidationError("--input \(name): \(name) runs continuously; `spillway run --log-level debug` shows its records")
        }
        config.inputs.removeAll { continuous.contains($0.plugin) }
        if !inputNames.isEmpty {
            config.inputs.removeAll { !inputNames.contains($0.plugin) }
            for name in inputNames where !config.inputs.contains(where: { $0.plugin == name }) {
                FileHandle.standardError.write(Data("spillway: --input \(name): the configuration declares no [[inputs.\(name)]]\n".utf8))
                throw ExitCode(2)
            }
        }
        for w in Preflight.warnings(config) { FileHandle.standardError.write(Data("spillway: warning: \(w)\n".utf8)) }
        var scratch: [Record] = []
        var report = InputReport()
        if config.inputs.contains(where: { $0.input.needsBaseline }) {
            for i in config.inputs.indices where config.inputs[i].input.needsBaseline {
                _ = config.inputs[i].collect(agent: config.agent, now: wallClockNanoseconds(), into: &scratch, report: &report)
            }
            try await Task.sleep(for: .nanoseconds(gap))
        }
        var records: [Record] = []
        var failed = false
        for i in config.inputs.indices {
            let instance = "input \(config.inputs[i].plugin) (\(config.inputs[i].location))"
            report.removeAll()
            var error: (any Error)?
            if let exec = config.inputs[i].input as? ExecInput {
                // Awaited here, never waited for on a thread of the pool (which the run needs).
                let start = records.count
                do throws(InputError) {
                    let note = try await exec.collect(now: wallClockNanoseconds(), stop: ExecStop(), into: &records, report: &report)
                    report.skipMore(note.unlisted)
                } catch let e {
                    error = e
                }
                config.inputs[i].applyCommon(agent: config.agent, to: &records, from: start)
            } else {
                error = config.inputs[i].collect(agent: config.agent, now: wallClockNanoseconds(), into: &records, report: &report)
            }
            for e in report.skipped { FileHandle.standardError.write(Data("spillway: \(instance): left out: \(e)\n".utf8)) }
            if report.skippedCount > report.skipped.count {
                let paths = Set(report.skipped.map(\.path)).sorted().joined(separator: ", ")
                FileHandle.standardError.write(Data("spillway: \(instance): left out: \(report.skippedCount - report.skipped.count) more (\(paths))\n".utf8))
            }
            for e in report.notices { FileHandle.standardError.write(Data("spillway: \(instance): note: \(e)\n".utf8)) }
            if let error {
                FileHandle.standardError.write(Data("spillway: \(instance): failed: \(error)\n".utf8))
                failed = true
            }
        }
        LineProtocol.stableSort(&records)
        FileHandle.standardOutput.write(Data(LineProtocol.encode(records).utf8))
        if failed { throw ExitCode(1) }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the configuration and list the effective input instances.",
        discussion: """
            Exit code 0 when the configuration is valid (warnings included), 2 with every problem \
            listed when it is not, or when its data_dir cannot be created or written by this user.
            """
    )

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load()
        let a = config.agent
        let dataDir = DataDirectory.resolve(explicit: a.dataDir, environment: ProcessInfo.processInfo.environment)
        if let problem = Preflight.dataDirProblem(config, resolved: dataDir) { throw failWithProblems([problem]) }
        if let tls = config.redis.tls, let why = RedisTransport.problem(with: tls) {
            let at = config.redis.tlsLocation
            let file = at?.file ?? config.files.first { $0.hasSuffix("agent.toml") } ?? config.files.first ?? ""
            throw failWithProblems([Diagnostic(file: file, line: at?.line, keyPath: at?.keyPath ?? "outputs.redis", message: "TLS cannot work: \(why)",
                                               fix: "name the PEM files of the CA (tls_ca_file), and of a client certificate and its own key")])
        }
        var out = "configuration OK: \(config.files.count) file\(config.files.count == 1 ? "" : "s"), \(config.inputs.count) input\(config.inputs.count == 1 ? "" : "s")\n"
        for f in config.files { out += "  file \(f)\n" }
        out += "agent: hostname=\(a.hostname) interval=\(Units.formatDuration(a.interval)) flush_interval=\(Units.formatDuration(a.flushInterval)) batch_size=\(a.batchSize) jitter=\(Units.formatDuration(a.jitter))\n"
        out += "       data_dir=\(dataDir)\(a.hostRoot.isEmpty ? "" : " host_root=\(a.hostRoot)") proc_root=\(a.procRoot) sys_root=\(a.sysRoot)"
        out += a.tags.isEmpty ? "\n" : " tags=\(a.tags.map { "\($0.key)=\($0.value)" }.joined(separator: ","))\n"
        out += "       buffer_limit=\(a.bufferLimit) log_format=\(a.logFormat) internal=\(a.internalMetrics) http_listen=\(a.httpListen.map { "\($0)" } ?? "off")\n"
        let s = config.survive
        out += "breaker: failure_threshold=\(s.breaker.failureThreshold) open_timeout=\(Units.formatDuration(s.breaker.openTimeout)) max_open_timeout=\(Units.formatDuration(s.breaker.maxOpenTimeout))\n"
        out += "buffer: max_bytes=\(Units.formatSize(s.maxBytes)) when_full=\(s.whenFull) synchronous=\(s.synchronous)\n"
        let r = config.redis
        out += "output redis: url=\(r.urlDisplay) format=\(r.format.rawValue) key=\(r.key.text)"
        switch r.format {
        case .stream:
            out += r.maxAge.map { " max_age=\(Units.formatDuration($0))" } ?? " maxlen=\(r.maxlen)"
            out += " ids=\(r.ids.rawValue)"
        case .timeseries:
            out += " retention=\(Units.formatDuration(r.retentionMs * 1_000_000))"
            if !r.rollups.isEmpty {
                out += " rollups=" + r.rollups.map { "\($0.aggregation):\($0.bucketText):\(Units.formatDuration($0.retentionMs * 1_000_000))" }.joined(separator: ",")
            }
        }
        out += " timeout=\(Units.formatDuration(r.timeout)) connect_timeout=\(Units.formatDuration(r.connectTimeout))\n"
        if let t = r.tls {
            out += "       tls: ca_file=\(t.caFile ?? "(the system's CAs)") server_name=\(t.serverName ?? "(the url's host)")"
            if let c = t.certFile { out += " cert_file=\(c) key_file=\(t.keyFile ?? "")" }
            out += t.insecureSkipVerify ? " verify=off\n" : " verify=on\n"
        }
        if config.aggregate.declared {
            let g = config.aggregate
            out += "aggregate: streams=\(g.streams) stream_key=\(g.streamKey.text) buckets=\(g.buckets.map { $0.retentionMs > 0 ? "\($0.text):\(Units.formatDuration($0.retentionMs * 1_000_000))" : $0.text }.joined(separator: ","))"
            out += " grace=\(Units.formatDuration(g.graceMs * 1_000_000)) group=\(g.group) consumer=\(g.consumer) key=\(g.key.text)\n"
            out += "       retention=\(Units.formatDuration(g.retentionMs * 1_000_000)) claim_idle=\(Units.formatDuration(g.claimIdleMs * 1_000_000)) count=\(g.count) batch=\(g.batch)"
            out += " max_open_buckets=\(g.maxOpenBuckets) keep=\(Units.formatDuration(g.keepMs * 1_000_000)) scan_interval=\(Units.formatDuration(g.scanIntervalMs * 1_000_000)) poll_interval=\(Units.formatDuration(g.pollIntervalMs * 1_000_000))\n"
        }
        for i in config.inputs {
            let continuous = InputRegistry.all.contains { $0.name == i.plugin && !$0.scheduled }
            var line = "input \(i.plugin) (\(i.location))" + (continuous ? " continuous" : " every \(Units.formatDuration(i.interval))")
            if let t = i.input as? TailInput {
                let o = t.options
                line = "input tail (\(i.location)) files=\(o.files.map(\.pattern).joined(separator: ","))"
                if !o.exclude.isEmpty { line += " exclude=\(o.exclude.map(\.pattern).joined(separator: ","))" }
                line += " format=\(o.parser.format.rawValue) name=\(o.parser.name) from_beginning=\(o.fromBeginning)"
                line += " watch_interval=\(Units.formatDuration(o.watchInterval)) max_line_bytes=\(o.maxLineBytes)"
            }
            if let n = i.nameOverride { line += " as \(n)" }
            if !i.tags.isEmpty { line += " tags=\(i.tags.map { "\($0.key)=\($0.value)" }.joined(separator: ","))" }
            if let k = i.key { line += " key=\(k.text)" }
            if let m = i.maxlen { line += " maxlen=\(m)" }
            out += line + "\n"
        }
        for w in config.warnings + Preflight.warnings(config) { out += "warning: \(w)\n" }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Collect on schedule until SIGINT or SIGTERM, then stop cleanly; SIGHUP reloads the configuration.",
        discussion: "Each input collects every `interval` (aligned to the clock, plus up to `jitter`); records are batched and written to Redis as [outputs.redis] says. --log-level debug also logs each record."
    )

    @OptionGroup var options: ConfigOptions

    @OptionGroup var logging: LogOptions

    func run() async throws {
        let config = try options.load()
        pinMallocMmapThreshold()
        let logger = logging.bootstrap(format: config.agent.logFormat)
        _ = AgentRun.id  // this run starts now
        for w in config.warnings + Preflight.warnings(config) { logger.warning("\(w)") }
        let dataDirectory = DataDirectory.resolve(explicit: config.agent.dataDir, environment: ProcessInfo.processInfo.environment)
        // One line saying why, never Foundation's error dump.
        if let problem = Preflight.dataDirProblem(config, resolved: dataDirectory) {
            FileHandle.standardError.write(Data("spillway: \(problem)\n".utf8))
            throw ExitCode(1)
        }
        do {
            try prepareDataDirectory(dataDirectory)
        } catch {
            FileHandle.standardError.write(Data("spillway: data_dir \(dataDirectory) cannot be used: \(oneLine(error))\n".utf8))
            throw ExitCode(1)
        }
        // One agent per data_dir: a second would read the same files again and share the buffer.
        let lock: DataDirectoryLock
        do {
            lock = try DataDirectoryLock(directory: dataDirectory)
        } catch {
            FileHandle.standardError.write(Data("spillway: \(error)\n".utf8))
            throw ExitCode(1)
        }
        defer { withExtendedLifetime(lock) {} }
        logger.info("starting", metadata: [
            "config.inputs": "\(config.inputs.count)", "agent.host": "\(config.agent.hostname)",
            "redis.url": "\(config.redis.urlDisplay)", "redis.format": "\(config.redis.format.rawValue)", "agent.data_dir": "\(dataDirectory)",
        ])
        try await RunLoop(options: options, dataDirectory: dataDirectory, logger: logger).run(config)
        logger.info("stopped")
    }
}
