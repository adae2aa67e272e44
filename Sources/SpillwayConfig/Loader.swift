import Foundation
import SpillwayCore
import TOMLKit

/// Loads `agent.toml` and every `*.toml` of the drop-in directory (in file-name order), substitutes
/// `${VAR}`, and validates it all, reporting every problem at once.
public struct ConfigLoader: Sendable {
    public var registry: [InputDescriptor]
    public var environment: [String: String]
    public var defaultHostname: String

    /// Top-level tables this version understands.
    static let topLevelKeys = ["agent", "inputs", "outputs", "breaker", "buffer", "status", "query", "aggregate"]
    /// Outputs this version has.
    static let outputNames = ["redis"]

    public init(
        registry: [InputDescriptor],
        environment: [String: String] = ProcessInfo.processInfo.environment,
        defaultHostname: String = machineHostname()
    ) {
        self.registry = registry
        self.environment = environment
        self.defaultHostname = defaultHostname
    }

    /// The drop-in directory for a config file: `plugins.d` beside it.
    public static func defaultConfigDir(for configPath: String) -> String {
        let dir = (configPath as NSString).deletingLastPathComponent
        return (dir.isEmpty ? "." : dir) + "/plugins.d"
    }

    public func load(configPath: String, configDir: String? = nil) throws(ConfigError) -> Config {
        let sink = DiagnosticSink()
        let fm = FileManager.default
        var paths: [String] = []
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: configPath, isDirectory: &isDir), !isDir.boolValue {
            paths.append(configPath)
        } else {
            sink.report(path: configPath, isDir.boolValue ? "is a directory, not a config file" : "config file not found",
                        fix: "pass --config with the path of agent.toml")
            throw ConfigError(diagnostics: sink.items)
        }
        let dropIns = configDir ?? Self.defaultConfigDir(for: configPath)
        if fm.fileExists(atPath: dropIns, isDirectory: &isDir) {
            if !isDir.boolValue {
                sink.report(path: dropIns, "is not a directory", fix: "--config-dir names the directory of drop-in *.toml files")
            } else if let names = try? fm.contentsOfDirectory(atPath: dropIns) {
                for name in names.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
                where name.hasSuffix(".toml") && !name.hasPrefix(".") {
                    paths.append(dropIns + "/" + name)
                }
            } else {
                sink.report(path: dropIns, "cannot be listed", fix: "check its permissions")
            }
        } else if configDir != nil {
            sink.report(path: dropIns, "drop-in directory not found", fix: "create it, or leave out --config-dir")
        }

        // Relative paths resolve against the config file's directory, in every file.
        let base = ConfigPaths.directory(of: configPath)
        var agent = AgentConfig(hostname: defaultHostname)
        var inputs: [InputInstance] = []
        var agentFile: SourceFile?
        var explicitRoots: Set<String> = []
        var redis = RedisOutputConfig()
        var redisFile: SourceFile?
        var survive = SurviveConfig()
        var aggregate: AggregateConfig.Raw?
        var aggregateFile: SourceFile?
        var query = QueryConfig()
        var warnings: [Diagnostic] = []
        for path in paths {
            guard let data = fm.contents(atPath: path) else {
                sink.report(path: path, "cannot be read", fix: "check that it exists and is readable")
                continue
            }
            guard let raw = String(data: data, encoding: .utf8) else {
                sink.report(path: path, "is not valid UTF-8", fix: "save it as UTF-8")
                continue
            }
            let (text, envProblems) = EnvSubstitution.apply(raw, environment: environment)
            for p in envProblems { sink.report(path: path, line: p.line, p.message, fix: p.fix) }
            let file = SourceFile(path: path, text: text)
            let root: TOMLTable
            do {
                root = try TOMLTable(string: text)
            } catch let e as TOMLParseError {
                sink.report(path: path, line: e.source.begin.line,
                            "TOML syntax error at column \(e.source.begin.column): \(e.description)",
                            fix: "see https://toml.io for the syntax")
                continue
            } catch {
                sink.report(path: path, "TOML syntax error: \(error)")
                continue
            }
            for key in root.keys where !Self.topLevelKeys.contains(key) {
                let hint = closestMatch(to: key, in: Self.topLevelKeys).map { "did you mean [\($0)]?" }
                sink.report(file, key, "unknown table \"\(key)\"",
                            fix: hint ?? "top-level tables are [agent], [[inputs.NAME]], [outputs.redis], [breaker], [buffer], [status], [query] and [aggregate]")
            }
            if let value = root["agent"] {
                if let table = value.table {
                    var r = OptionReader(table: table, path: "agent", file: file, sink: sink, baseDirectory: base)
                    readAgent(&r, file: file, into: &agent, explicitRoots: &explicitRoots)
                    r.finish()
                    agentFile = file
                } else {
                    sink.report(file, "agent", "expected a table, found \(OptionReader.typeName(value))", fix: "write [agent] and its keys below it")
                }
            }
            for (section, read) in [("breaker", SurviveConfig.readBreaker), ("buffer", SurviveConfig.readBuffer), ("status", SurviveConfig.readStatus)] as [(String, (inout OptionReader, inout SurviveConfig) -> Void)] {
                guard let value = root[section] else { continue }
                guard let table = value.table else {
                    sink.report(file, section, "expected a table, found \(OptionReader.typeName(value))", fix: "write [\(section)] and its keys below it")
                    continue
                }
                var r = OptionReader(table: table, path: section, file: file, sink: sink, baseDirectory: base)
                read(&r, &survive)
                r.finish()
            }
            if let value = root["aggregate"] {
                if let table = value.table {
                    if let earlier = aggregateFile {
                        sink.report(file, "aggregate", "[aggregate] is also declared in \(earlier.path)", fix: "declare it once")
                    }
                    var r = OptionReader(table: table, path: "aggregate", file: file, sink: sink, baseDirectory: base)
                    aggregate = AggregateConfig.read(&r)
                    r.finish()
                    aggregateFile = file
                } else {
                    sink.report(file, "aggregate", "expected a table, found \(OptionReader.typeName(value))", fix: "write [aggregate] and its keys below it")
                }
            }
            if let value = root["query"] {
                if let table = value.table {
                    var r = OptionReader(table: table, path: "query", file: file, sink: sink, baseDirectory: base)
                    QueryConfig.read(&r, into: &query)
                    r.finish()
                } else {
                    sink.report(file, "query", "expected a table, found \(OptionReader.typeName(value))", fix: "write [query] and its keys below it")
                }
            }
            if let value = root["outputs"] {
                if let table = value.table {
                    for name in table.keys where !Self.outputNames.contains(name) {
                        let hint = closestMatch(to: name, in: Self.outputNames).map { "did you mean [outputs.\($0)]?" }
                        sink.report(file, "outputs.\(name)", "unknown output \"\(name)\"", fix: hint ?? "the output is [outputs.redis]")
                    }
                    if let v = table["redis"] {
                        if let t = v.table {
                            if let earlier = redisFile {
                                sink.report(file, "outputs.redis", "[outputs.redis] is also declared in \(earlier.path)", fix: "declare it once")
                            }
                            var r = OptionReader(table: t, path: "outputs.redis", file: file, sink: sink, baseDirectory: base)
                            redis = RedisOutputConfig.read(&r, baseDirectory: base)
                            r.finish()
                            redisFile = file
                        } else {
                            sink.report(file, "outputs.redis", "expected a table, found \(OptionReader.typeName(v))", fix: "write [outputs.redis]")
                        }
                    }
                } else {
                    sink.report(file, "outputs", "expected a table, found \(OptionReader.typeName(value))", fix: "write [outputs.redis]")
                }
            }
            if let value = root["inputs"] {
                if let table = value.table {
                    readInputs(table, file: file, sink: sink, base: base, into: &inputs)
                } else {
                    sink.report(file, "inputs", "expected a table of inputs, found \(OptionReader.typeName(value))",
                                fix: "declare each input as [[inputs.NAME]]")
                }
            }
        }
        // An input without its own interval takes [agent] interval as it stands after every file.
        for i in inputs.indices where inputs[i].interval == 0 { inputs[i].interval = agent.interval }
        // proc_root and sys_root not given: the host's, below host_root.
        if !agent.hostRoot.isEmpty {
            if !explicitRoots.contains("proc_root") { agent.procRoot = agent.hostRoot + "/proc" }
            if !explicitRoots.contains("sys_root") { agent.sysRoot = agent.hostRoot + "/sys" }
        }
        if let agentFile, agent.jitter >= agent.interval {
            sink.report(agentFile, "agent.jitter", "jitter \(Units.formatDuration(agent.jitter)) is not below interval \(Units.formatDuration(agent.interval))",
                        fix: "use a jitter smaller than the interval")
        }
        // Key templates: {field} only for timeseries; explicit IDs on a key without {host} collide
        // when many hosts write it.
        for instance in inputs {
            guard let key = instance.key else { continue }
            if redis.format == .stream, key.parts.contains(.field) {
                sink.items.append(Diagnostic(file: instance.file, line: instance.line, keyPath: "inputs.\(instance.plugin).key",
                                             message: "{field} is for format = \"timeseries\" keys", fix: "remove {field}"))
            }
        }
        if redis.format == .stream, redis.ids == .explicit {
            let shared = [(redisFile?.path ?? paths[0], redisFile?.line(of: "outputs.redis.key"), "outputs.redis.key", redis.key)]
                + inputs.compactMap { i in i.key.map { (i.file, i.line, "inputs.\(i.plugin).key", $0) } }
            for (file, line, keyPath, template) in shared where !template.hasHost {
                warnings.append(Diagnostic(file: file, line: line, keyPath: keyPath,
                                           message: "key \"\(template.text)\" has no {host} but ids = \"explicit\": hosts writing the same stream would refuse each other's IDs",
                                           fix: "add {host} to the key, or set [outputs.redis] ids = \"auto\""))
            }
        }
        if inputs.isEmpty {
            warnings.append(Diagnostic(file: paths[0], line: nil, keyPath: "inputs",
                                       message: "no inputs are declared: the agent would collect nothing",
                                       fix: "add e.g. [[inputs.cpu]] to \(paths[0]) or a *.toml in \(dropIns)"))
        }
        // [aggregate]: its defaults come from [outputs.redis] and [agent], as they stand after every file.
        let redisKeyLocation = redisFile.map { f in
            Diagnostic(file: f.path, line: f.line(of: "outputs.redis.key"), keyPath: f.line(of: "outputs.redis.key") == nil ? "outputs.redis" : "outputs.redis.key", message: "")
        }
        let (aggregateConfig, aggregateOwn, aggregateAcross) = AggregateConfig.resolve(aggregate, redis: redis, agent: agent, redisKeyLocation: redisKeyLocation)
        if aggregate != nil {
            sink.items += aggregateOwn
            warnings += aggregateAcross
        }
        guard sink.items.isEmpty else { throw ConfigError(diagnostics: sink.items) }
        var config = Config(agent: agent, inputs: inputs, redis: redis, files: paths, warnings: sink.warnings + warnings)
        config.survive = survive
        config.aggregate = aggregateConfig
        config.aggregateProblems = (aggregate == nil ? aggregateOwn : []) + aggregateAcross
        config.query = query
        return config
    }

    private func readAgent(_ r: inout OptionReader, file: SourceFile, into agent: inout AgentConfig, explicitRoots: inout Set<String>) {
        let base = r.baseDirectory
        let host = r.string("hostname", default: "")
        if r.has("hostname") { agent.hostname = host.isEmpty ? defaultHostname : host }
        agent.interval = r.duration("interval", default: agent.interval, minimum: 1_000_000)
        agent.flushInterval = r.duration("flush_interval", default: agent.flushInterval, minimum: 1_000_000)
        agent.batchSize = r.int("batch_size", default: agent.batchSize, range: 1...1_000_000)
        agent.bufferLimit = r.int("buffer_limit", default: agent.bufferLimit, range: 1...100_000_000)
        agent.jitter = r.duration("jitter", default: agent.jitter)
        let logFormat = r.string("log_format", default: agent.logFormat)
        if AgentConfig.logFormats.contains(logFormat) { agent.logFormat = logFormat } else {
            r.error("log_format", "unknown log format \"\(logFormat)\"", fix: "use \"text\", \"logfmt\" or \"json\"")
        }
        if let dir = r.optionalString("data_dir") {
            // empty: the default; relative: against the config file's directory.
            agent.dataDir = dir.isEmpty ? nil : ConfigPaths.resolve(dir, against: base)
            agent.dataDirLocation = dir.isEmpty ? nil : Diagnostic(file: file.path, line: file.line(of: "agent.data_dir"), keyPath: "agent.data_dir", message: "")
        }
        // Empty means the default (so agent.toml can write "${SPILLWAY_PROC_ROOT:-}").
        for key in ["host_root", "proc_root", "sys_root"] {
            guard let root = r.optionalString(key), !root.isEmpty else { continue }
            guard root.hasPrefix("/") else {
                r.error(key, "\"\(root)\" is not an absolute path", fix: "write a path starting with /")
                continue
            }
            explicitRoots.insert(key)
            switch key {
            case "host_root": agent.hostRoot = AgentConfig.normalizedRoot(root)
            case "proc_root": agent.procRoot = root
            default: agent.sysRoot = root
            }
        }
        agent.internalMetrics = r.bool("internal", default: agent.internalMetrics)
        if let listen = r.optionalString("http_listen") {
            // Empty: off (so agent.toml can write "${SPILLWAY_HTTP_LISTEN:-}").
            if listen.isEmpty {
                agent.httpListen = nil
            } else {
                switch HTTPListen.parse(listen) {
                case .success(let l):
                    agent.httpListen = l
                    if !l.isLoopback {
                        r.warning("http_listen", "\(l) is not a loopback address: /health and /metrics are served, without authentication, to every host that can reach it",
                                  fix: "keep it behind a firewall, or write \"127.0.0.1:\(l.port)\"")
                    }
                case .failure(let e): r.error("http_listen", e.description, fix: "write \"127.0.0.1:9469\" (or \":9469\" for loopback, \"[::1]:9469\", \"0.0.0.0:9469\" on purpose)")
                }
            }
        }
        for tag in r.stringTable("tags") {
            if let i = agent.tags.firstIndex(where: { $0.key == tag.key }) { agent.tags[i] = tag } else { agent.tags.append(tag) }
        }
        agent.tags.sort { $0.key < $1.key }
    }

    /// Every key each top-level table takes, with its default as TOML ("none" when it has none):
    /// found by reading empty tables, so the list cannot drift from the code (the docs test checks
    /// each appears in docs/configuration.md).
    public func tableOptions() -> [(table: String, options: [(key: String, default: String)])] {
        let file = SourceFile(path: "<options>", text: "")
        func reader(_ path: String) -> OptionReader {
            OptionReader(table: TOMLTable(), path: path, file: file, sink: DiagnosticSink(), baseDirectory: "/")
        }
        var out: [(String, [(key: String, default: String)])] = []
        var agent = AgentConfig(hostname: defaultHostname)
        var roots = Set<String>()
        var r = reader("agent")
        readAgent(&r, file: file, into: &agent, explicitRoots: &roots)
        out.append(("agent", r.asked))
        r = reader("outputs.redis")
        _ = RedisOutputConfig.read(&r, baseDirectory: "/")
        out.append(("outputs.redis", r.asked))
        for (section, read) in [("breaker", SurviveConfig.readBreaker), ("buffer", SurviveConfig.readBuffer), ("status", SurviveConfig.readStatus)] as [(String, (inout OptionReader, inout SurviveConfig) -> Void)] {
            var survive = SurviveConfig()
            r = reader(section)
            read(&r, &survive)
            out.append((section, r.asked))
        }
        var query = QueryConfig()
        r = reader("query")
        QueryConfig.read(&r, into: &query)
        out.append(("query", r.asked))
        r = reader("aggregate")
        _ = AggregateConfig.read(&r)
        out.append(("aggregate", r.asked))
        return out
    }

    /// One `[[inputs.NAME]]` table: the options every input takes (`interval`, `name_override`,
    /// `tags`, `key`, `maxlen`), then the input's own.
    static func readInstance(_ descriptor: InputDescriptor, _ r: inout OptionReader) -> InputInstance {
        let name = descriptor.name
        if !descriptor.scheduled, r.has("interval") {
            r.error("interval", "\(name) runs continuously and takes no interval",
                    fix: name == "tail" ? "remove it (watch_interval sets how often files are looked for)" : "remove it")
        }
        let interval = descriptor.scheduled ? r.duration("interval", default: 0, minimum: 1_000_000) : 0
        let nameOverride = r.optionalString("name_override")
        if let n = nameOverride, n.isEmpty { r.error("name_override", "must not be empty", fix: "leave it out to keep \"\(name)\"") }
        let tags = r.stringTable("tags")
        // {field} is checked against the output format once every file is read.
        let key = RedisOutputConfig.keyTemplate(&r, "key", format: .timeseries)
        let maxlen = r.has("maxlen") ? r.int("maxlen", default: 0, range: 0...Int(Int32.max)) : nil
        let input = descriptor.make(&r)
        return InputInstance(plugin: name, file: "", line: nil, interval: interval,
                             nameOverride: nameOverride, tags: tags, key: key, maxlen: maxlen, input: input)
    }

    private func readInputs(_ table: TOMLTable, file: SourceFile, sink: DiagnosticSink, base: String,
                            into inputs: inout [InputInstance]) {
        let names = registry.map(\.name)
        for name in table.keys.sorted(by: { (file.line(of: "inputs.\($0)") ?? 0) < (file.line(of: "inputs.\($1)") ?? 0) }) {
            guard let descriptor = registry.first(where: { $0.name == name }) else {
                let fix = closestMatch(to: name, in: names).map { "did you mean \"\($0)\"?" }
                    ?? "built-in inputs: \(names.joined(separator: ", "))"
                sink.report(file, "inputs.\(name)", "unknown input \"\(name)\"", fix: fix)
                continue
            }
            guard let value = table[name], let array = value.array else {
                sink.report(file, "inputs.\(name)", "expected an array of tables",
                            fix: "declare it as [[inputs.\(name)]] (double brackets)")
                continue
            }
            for (index, element) in array.enumerated() {
                let path = "inputs.\(name)[\(index)]"
                guard let t = element.table else {
                    sink.report(file, path, "expected a table, found \(OptionReader.typeName(element))",
                                fix: "declare it as [[inputs.\(name)]]")
                    continue
                }
                var r = OptionReader(table: t, path: path, file: file, sink: sink, baseDirectory: base)
                var instance = Self.readInstance(descriptor, &r)
                r.finish()
                instance.file = file.path
                instance.line = file.line(of: path)
                inputs.append(instance)
            }
        }
    }
}

/// Where the agent keeps its state (`data_dir`).
public enum DataDirectory {
    public static let systemDefault = "/var/lib/spillway"

    /// `data_dir` when set (already absolute: see `ConfigLoader`); else `/var/lib/spillway` when it
    /// is (or can be made) writable; else `$XDG_STATE_HOME/spillway` when XDG_STATE_HOME is an
    /// absolute path; else `~/.local/state/spillway` (`$HOME`, else the user's home directory from
    /// the password database). Never a path relative to the working directory.
    /// `forReading` (`status`): `/var/lib/spillway` also when it exists but this user may not write
    /// it (a monitoring user reading the agent's state).
    public static func resolve(explicit: String?, environment: [String: String], forReading: Bool = false,
                               isWritable: (String) -> Bool = DataDirectory.isWritable,
                               exists: (String) -> Bool = DataDirectory.isDirectory,
                               home: () -> String? = DataDirectory.passwordDatabaseHome) -> String {
        if let explicit { return explicit }
        if isWritable(systemDefault) || (forReading && exists(systemDefault)) { return systemDefault }
        if let xdg = environment["XDG_STATE_HOME"], xdg.hasPrefix("/") { return ConfigPaths.normalized(xdg + "/spillway") }
        if let h = environment["HOME"], h.hasPrefix("/") { return ConfigPaths.normalized(h + "/.local/state/spillway") }
        if let h = home(), h.hasPrefix("/") { return ConfigPaths.normalized(h + "/.local/state/spillway") }
        // No home at all: the system default, which `check` and `run` then report as not writable.
        return systemDefault
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// The user's home directory from the password database.
    public static func passwordDatabaseHome() -> String? {
        guard let pw = getpwuid(getuid()), let dir = pw.pointee.pw_dir else { return nil }
        return String(cString: dir)
    }

    /// The kernel's view `dir` is in (procfs at /proc, sysfs at /sys), where nothing can be created
    /// even by root; else nil.
    static func pseudoFileSystem(_ dir: String) -> String? {
        guard let resolved = realpath(dir, nil) else { return nil }
        defer { free(resolved) }
        let path = String(cString: resolved)
        for (root, kind) in [("/proc", "procfs"), ("/sys", "sysfs")] where path == root || path.hasPrefix(root + "/") {
            return kind
        }
        return nil
    }

    /// Whether `path` is a writable directory, or could be created as one.
    public static func isWritable(_ path: String) -> Bool { problem(path) == nil }

    /// Why this user cannot use `path` as its data_dir (create it, or write in it), or nil when it
    /// can: the first existing ancestor must be a directory it may write and enter.
    public static func problem(_ path: String) -> String? {
        var dir = path
        var missing = false
        while true {
            var st = stat()
            if stat(dir, &st) == 0 {
                guard (st.st_mode & S_IFMT) == S_IFDIR else {
                    return missing ? "\(dir) is not a directory, so \(path) cannot be created" : "\(path) is not a directory"
                }
                if let kind = pseudoFileSystem(dir) {
                    return "\(dir) is on \(kind), which holds no files of ours: data_dir must be on a disk (or a tmpfs)"
                }
                guard access(dir, W_OK | X_OK) == 0 else {
                    let why = String(cString: strerror(errno))
                    return missing ? "cannot create \(path): \(dir) is not writable by this user (\(why))"
                        : "\(path) is not writable by this user (\(why))"
                }
                // The agent's files in it (another user's, e.g. root's from an earlier run).
                for name in ["buffer.sqlite", "buffer.sqlite-wal", "stream-ids", "stream-ids.alt", "lock"] where !missing {
                    let file = path + "/" + name
                    if access(file, F_OK) == 0, access(file, R_OK | W_OK) != 0 {
                        return "\(file) is not writable by this user (\(String(cString: strerror(errno))))"
                    }
                }
                return nil
            }
            guard errno == ENOENT || errno == ENOTDIR else {
                return "cannot use \(path): \(dir): \(String(cString: strerror(errno)))"
            }
            missing = true
            let parent = (dir as NSString).deletingLastPathComponent
            if parent.isEmpty || parent == dir { return "cannot create \(path)" }
            dir = parent
        }
    }
}
