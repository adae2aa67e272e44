import Foundation
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import Testing

let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
let repoRoot = here.deletingLastPathComponent().deletingLastPathComponent()

func loader(_ env: [String: String] = [:]) -> ConfigLoader {
    ConfigLoader(registry: InputRegistry.all, environment: env, defaultHostname: "testhost")
}

/// A temp dir with the given files; removed by the caller.
func makeTree(_ files: [String: String]) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-config-\(UUID().uuidString)").path
    for (name, text) in files {
        let path = "\(dir)/\(name)"
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
    return dir
}

func diagnostics(_ body: () throws -> Config) -> [Diagnostic] {
    do {
        _ = try body()
        return []
    } catch let e as ConfigError {
        return e.diagnostics
    } catch {
        Issue.record("unexpected error \(error)")
        return []
    }
}

/// `# expect: LINE KEYPATH | MESSAGE | FIX` at the top of each Malformed/*.toml.
struct Expectation: Sendable, CustomStringConvertible {
    var file: String
    var line: Int
    var keyPath: String
    var message: String
    var fix: String
    var description: String { (file as NSString).lastPathComponent }
}

func malformedCases() -> [Expectation] {
    let dir = here.appendingPathComponent("Malformed").path
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".toml") }.sorted()
    return names.compactMap { name in
        let path = "\(dir)/\(name)"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let header = text.split(separator: "\n").first, header.hasPrefix("# expect: ") else { return nil }
        let parts = header.dropFirst("# expect: ".count).split(separator: "|", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        let head = parts[0].split(separator: " ", maxSplits: 1).map(String.init)
        return Expectation(file: path, line: Int(head[0])!, keyPath: head.count > 1 ? head[1] : "",
                           message: parts[1], fix: parts[2])
    }
}

@Suite struct MalformedConfigs {
    @Test func thereAreAtLeastFifteen() {
        #expect(malformedCases().count >= 15)
    }

    @Test(arguments: malformedCases())
    func reportsTheNamedLocatedError(_ c: Expectation) throws {
        let diags = diagnostics { try loader().load(configPath: c.file) }
        #expect(diags.count == 1, "\(diags)")
        let d = try #require(diags.first)
        #expect(d.file == c.file)
        #expect(d.line == c.line, "\(d)")
        #expect(d.keyPath == c.keyPath, "\(d)")
        #expect(d.message.contains(c.message), "\(d)")
        if c.fix.isEmpty {
            #expect(d.fix == nil, "\(d)")
        } else {
            #expect((d.fix ?? "").contains(c.fix), "\(d)")
        }
    }
}

@Suite struct Loading {
    @Test func everyProblemIsReportedAtOnce() throws {
        let dir = try makeTree([
            "agent.toml": "[agent]\ninterval = \"ten\"\nbatch_sise = 5\n[[inputs.cpu]]\npercpu = 1\n",
            "plugins.d/10-net.toml": "[[inputs.net]]\ninterfaces = [\"[\"]\n[[inputs.dsik]]\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let diags = diagnostics { try loader().load(configPath: "\(dir)/agent.toml") }
        #expect(diags.map { "\(($0.file as NSString).lastPathComponent):\($0.line ?? 0) \($0.keyPath)" } == [
            "agent.toml:2 agent.interval",
            "agent.toml:3 agent.batch_sise",
            "agent.toml:5 inputs.cpu[0].percpu",
            "10-net.toml:2 inputs.net[0].interfaces",
            "10-net.toml:3 inputs.dsik",
        ])
        #expect(diags[4].fix == "did you mean \"disk\"?")
    }

    @Test func dropInsMergeInFileNameOrder() throws {
        let dir = try makeTree([
            "agent.toml": "[agent]\ninterval = \"10s\"\nhostname = \"main\"\n[agent.tags]\ndc = \"eu\"\nrole = \"db\"\n[[inputs.mem]]\n",
            "conf/20-b.toml": "[agent]\nhostname = \"override\"\n[agent.tags]\nrole = \"web\"\n[[inputs.net]]\ninterval = \"1s\"\n",
            "conf/10-a.toml": "[[inputs.cpu]]\nname_override = \"processor\"\ntags = { team = \"core\" }\n[[inputs.cpu]]\npercpu = false\n",
            "conf/not-toml.txt": "garbage",
            "conf/.hidden.toml": "garbage",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try loader().load(configPath: "\(dir)/agent.toml", configDir: "\(dir)/conf")
        #expect(config.files.map { ($0 as NSString).lastPathComponent } == ["agent.toml", "10-a.toml", "20-b.toml"])
        #expect(config.agent.hostname == "override")
        #expect(config.agent.tags == [Tag("dc", "eu"), Tag("role", "web")])
        #expect(config.inputs.map(\.plugin) == ["mem", "cpu", "cpu", "net"])
        #expect(config.inputs.map(\.interval) == [10_000_000_000, 10_000_000_000, 10_000_000_000, 1_000_000_000])
        #expect(config.inputs[1].nameOverride == "processor")
        #expect(config.inputs[1].tags == [Tag("team", "core")])
        #expect(config.inputs[2].line == 4)
        #expect((config.inputs[2].input as? CPUInput)?.perCPU == false)
    }

    @Test func commonTagsAndNameOverrideAreApplied() throws {
        let dir = try makeTree([
            "agent.toml": "[agent]\nproc_root = \"/p\"\n[agent.tags]\nhost = \"ignored-by-record\"\ndc = \"eu\"\nkind = \"global\"\n",
            "plugins.d/a.toml": "[[inputs.mem]]\nname_override = \"memory\"\ntags = { kind = \"instance\" }\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = try loader().load(configPath: "\(dir)/agent.toml")
        config.agent.procRoot = here.deletingLastPathComponent().appendingPathComponent("SpillwayInputsTests/Fixtures/mem/basic/step0/proc").path
        var records: [Record] = []
        var report = InputReport()
        let error = config.inputs[0].collect(agent: config.agent, now: 42, into: &records, report: &report)
        #expect(error == nil)
        #expect(records.count == 1)
        #expect(records[0].name == "memory")
        #expect(records[0].tags == [Tag("dc", "eu"), Tag("host", "ignored-by-record"), Tag("kind", "instance")])
        #expect(records[0].timestamp == 42)
    }

    @Test func environmentSubstitution() throws {
        let dir = try makeTree([
            "agent.toml": """
                # ${IN_A_COMMENT} is left alone
                [agent]
                hostname = "${HOST_FROM_ENV}"
                interval = "${INTERVAL:-30s}"
                jitter = "${EMPTY:-1s}"
                [agent.tags]
                dc = "x-${DC}-y" # ${ALSO_IN_COMMENT}
                """,
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try loader(["HOST_FROM_ENV": "web-1", "DC": "eu", "EMPTY": ""]).load(configPath: "\(dir)/agent.toml")
        #expect(config.agent.hostname == "web-1")
        #expect(config.agent.interval == 30_000_000_000)
        #expect(config.agent.jitter == 1_000_000_000)
        #expect(config.agent.tags == [Tag("dc", "x-eu-y")])
    }

    @Test func defaults() throws {
        let dir = try makeTree(["agent.toml": "\n"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try loader().load(configPath: "\(dir)/agent.toml").agent
        #expect(a.hostname == "testhost")
        #expect(a.interval == 10_000_000_000 && a.flushInterval == 1_000_000_000 && a.jitter == 0)
        #expect(a.batchSize == 1000 && a.dataDir == nil)
        #expect(a.procRoot == "/proc" && a.sysRoot == "/sys" && a.tags.isEmpty)
    }

    @Test func missingConfigAndDropInDir() throws {
        let diags = diagnostics { try loader().load(configPath: "/nonexistent/agent.toml") }
        #expect(diags.map(\.message) == ["config file not found"])
        let dir = try makeTree(["agent.toml": "\n"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let d2 = diagnostics { try loader().load(configPath: "\(dir)/agent.toml", configDir: "\(dir)/nope") }
        #expect(d2.map(\.message) == ["drop-in directory not found"])
    }

    /// /proc and /sys take no files, even from root (who may "write" anywhere): check says so, as
    /// run would fail.
    @Test func aDataDirInTheKernelsViewsIsAProblem() {
        #expect(DataDirectory.problem("/proc/spillway")?.contains("/proc is on procfs") == true)
        #expect(DataDirectory.problem("/sys/kernel/spillway/data")?.contains("is on sysfs") == true)
        #expect(DataDirectory.problem(FileManager.default.temporaryDirectory.path + "/spillway-data-\(getpid())") == nil)
    }

    /// Problems are printed as a reader meets them: by file, then by line.
    @Test func problemsArePrintedInFileOrder() {
        let e = ConfigError(diagnostics: [
            Diagnostic(file: "agent.toml", line: 9, keyPath: "b", message: "nine"),
            Diagnostic(file: "plugins.d/x.toml", line: 1, keyPath: "c", message: "one of x"),
            Diagnostic(file: "agent.toml", line: nil, keyPath: "d", message: "no line"),
            Diagnostic(file: "agent.toml", line: 2, keyPath: "a", message: "two"),
        ])
        #expect(e.inFileOrder.map(\.message) == ["two", "nine", "no line", "one of x"])
        #expect(e.description.components(separatedBy: "\n").dropFirst().map { $0.contains("two") } == [true, false, false, false])
    }

    @Test func dataDirResolution() {
        #expect(DataDirectory.resolve(explicit: "/x", environment: [:], isWritable: { _ in false }) == "/x")
        #expect(DataDirectory.resolve(explicit: nil, environment: [:], isWritable: { _ in true }) == "/var/lib/spillway")
        #expect(DataDirectory.resolve(explicit: nil, environment: ["XDG_STATE_HOME": "/home/u/.local/state"], isWritable: { _ in false })
            == "/home/u/.local/state/spillway")
        // Never ./data (against whatever the working directory is): XDG_STATE_HOME (absolute only,
        // as the XDG spec says), else ~/.local/state, from HOME, else from the password database.
        #expect(DataDirectory.resolve(explicit: nil, environment: ["XDG_STATE_HOME": "state", "HOME": "/home/u"], isWritable: { _ in false })
            == "/home/u/.local/state/spillway")
        #expect(DataDirectory.resolve(explicit: nil, environment: ["HOME": "/home/u/"], isWritable: { _ in false })
            == "/home/u/.local/state/spillway")
        #expect(DataDirectory.resolve(explicit: nil, environment: [:], isWritable: { _ in false }, home: { "/home/pw" })
            == "/home/pw/.local/state/spillway")
        #expect(DataDirectory.resolve(explicit: nil, environment: [:], isWritable: { _ in false }, home: { nil }) == "/var/lib/spillway")
        // status (reading) as a user who may not write /var/lib/spillway: the agent's, when it exists.
        #expect(DataDirectory.resolve(explicit: nil, environment: ["HOME": "/home/u"], forReading: true, isWritable: { _ in false }, exists: { _ in true })
            == "/var/lib/spillway")
        #expect(DataDirectory.resolve(explicit: nil, environment: ["HOME": "/home/u"], forReading: true, isWritable: { _ in false }, exists: { _ in false })
            == "/home/u/.local/state/spillway")
    }

    /// data_dir, password_file and tail globs, when relative, are relative to the config file's
    /// directory (for a drop-in too), whatever the working directory.
    @Test func relativePathsResolveAgainstTheConfigFilesDirectory() throws {
        let dir = try makeTree([
            "etc/agent.toml": "[agent]\ndata_dir = \"state/../data\"\n[outputs.redis]\npassword_file = \"secret/redis.pass\"\n",
            "etc/secret/redis.pass": "pw1\n",
            "etc/plugins.d/tail.toml": "[[inputs.tail]]\nfiles = [\"logs/*.log\", \"/abs/*.log\"]\nexclude = [\"*.gz\", \"logs/old-*\"]\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try loader().load(configPath: "\(dir)/etc/agent.toml")
        #expect(config.agent.dataDir == "\(dir)/etc/data")
        #expect(config.redis.endpoint.password?.revealed == "pw1")
        let tail = try #require(config.inputs.first?.input as? TailInput).options
        #expect(tail.files.map(\.pattern) == ["\(dir)/etc/logs/*.log", "/abs/*.log"])
        #expect(tail.exclude.map(\.pattern) == ["*.gz", "\(dir)/etc/logs/old-*"])
    }

    /// An empty password_file is a warning (the agent connects without AUTH), not an empty AUTH;
    /// a config with no inputs is a warning.
    @Test func emptyPasswordFileAndNoInputsWarn() throws {
        let dir = try makeTree(["agent.toml": "[outputs.redis]\npassword_file = \"empty.pass\"\n", "empty.pass": "\n"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try loader().load(configPath: "\(dir)/agent.toml")
        #expect(config.redis.endpoint.password == nil)
        let warnings = config.warnings.map(\.description)
        #expect(warnings.contains { $0.contains("outputs.redis.password_file: \"\(dir)/empty.pass\" is empty: the agent connects without AUTH") }, "\(warnings)")
        #expect(warnings.contains { $0.contains("inputs: no inputs are declared") }, "\(warnings)")
    }
}

/// The shipped agent.toml + plugins.d load, run the six inputs, and every commented option in every
/// sample is valid when uncommented.
@Suite struct ShippedConfig {
    @Test func loadsTheSixInputs() throws {
        let config = try loader().load(configPath: repoRoot.appendingPathComponent("agent.toml").path)
        #expect(config.inputs.map(\.plugin).sorted() == ["cpu", "disk", "diskio", "mem", "net", "system", "tail"])
        let tail = try #require(config.inputs.first { $0.plugin == "tail" }?.input as? TailInput)
        #expect(tail.options.files.map(\.pattern) == ["/var/log/app/*.log"] && tail.options.parser.format == .raw)
        #expect(config.agent.interval == 10_000_000_000)
        #expect(config.agent.procRoot == "/proc")
        #expect(config.agent.sysRoot == "/sys" && config.agent.hostRoot == "")
        let inContainer = try loader(["SPILLWAY_HOST_ROOT": "/host/"]).load(configPath: repoRoot.appendingPathComponent("agent.toml").path)
        #expect(inContainer.agent.hostRoot == "/host")
        #expect(inContainer.agent.procRoot == "/host/proc" && inContainer.agent.sysRoot == "/host/sys")
    }

    /// Uncomments `# key = value` lines (and the continuation lines of a multi-line array).
    static func uncommented(_ text: String) -> String {
        var out: [String] = []
        var openArray = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " }
            if trimmed.hasPrefix("#") {
                let body = trimmed.dropFirst().drop { $0 == " " }
                // Option lines, and the table header of a sample shipped commented out (exec).
                let isKey = body.range(of: #"^[a-z_]+ = "#, options: .regularExpression) != nil || body.hasPrefix("[[inputs.")
                if isKey || openArray {
                    out.append(String(body))
                    let opens = body.filter { $0 == "[" }.count, closes = body.filter { $0 == "]" }.count
                    openArray = isKey ? opens > closes : (openArray && closes == 0)
                    continue
                }
            }
            out.append(String(line))
        }
        return out.joined(separator: "\n")
    }

    @Test func everyCommentedOptionIsValid() throws {
        let samples = try FileManager.default.contentsOfDirectory(atPath: repoRoot.appendingPathComponent("plugins.d").path)
            .filter { $0.hasSuffix(".toml") }.sorted()
        #expect(samples.count >= 6)
        var files: [String: String] = [
            "agent.toml": Self.uncommented(try String(contentsOf: repoRoot.appendingPathComponent("agent.toml"), encoding: .utf8)),
        ]
        for s in samples {
            files["plugins.d/\(s)"] = Self.uncommented(try String(contentsOf: repoRoot.appendingPathComponent("plugins.d/\(s)"), encoding: .utf8))
        }
        let dir = try makeTree(files)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Options that exclude each other (password/password_file, maxlen/max_age, and the
        // timeseries-only ones under format = "stream") are dropped the way a user picking one would.
        let agentText = files["agent.toml"]!
        func variantOf(dropping prefixes: [String], format: String) throws -> Config {
            let text = agentText.split(separator: "\n", omittingEmptySubsequences: false)
                .filter { line in !prefixes.contains { line.drop { $0 == " " }.hasPrefix($0) } }
                .joined(separator: "\n")
                .replacingOccurrences(of: "format = \"stream\"", with: "format = \"\(format)\"")
            try text.write(toFile: "\(dir)/agent.toml", atomically: true, encoding: .utf8)
            return try loader(["DATACENTER": "eu-2", "REDIS_PASSWORD": "pw"]).load(configPath: "\(dir)/agent.toml")
        }
        // The tls_* keys: with a rediss:// url, naming files that exist (the sample's are examples).
        let tlsKeys = ["tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name", "tls_insecure_skip_verify"]
        for (name, kind) in [("redis-ca.pem", "CERTIFICATE"), ("client.pem", "CERTIFICATE"), ("client.key", "PRIVATE KEY")] {
            try "-----BEGIN \(kind)-----\n-----END \(kind)-----\n".write(toFile: "\(dir)/\(name)", atomically: true, encoding: .utf8)
        }
        let tlsText = agentText
            .replacingOccurrences(of: "redis://127.0.0.1:6379/0}", with: "rediss://127.0.0.1:6380/0}")
            .replacingOccurrences(of: "/etc/spillway/redis-ca.pem", with: "\(dir)/redis-ca.pem")
            .replacingOccurrences(of: "/etc/spillway/client.pem", with: "\(dir)/client.pem")
            .replacingOccurrences(of: "/etc/spillway/client.key", with: "\(dir)/client.key")
            .split(separator: "\n", omittingEmptySubsequences: false)
            .filter { line in !["password_file", "max_age", "retention", "rollups"].contains { line.drop { $0 == " " }.hasPrefix($0) } }
            .joined(separator: "\n")
        try tlsText.write(toFile: "\(dir)/agent.toml", atomically: true, encoding: .utf8)
        let tls = try loader(["REDIS_PASSWORD": "pw"]).load(configPath: "\(dir)/agent.toml").redis
        #expect(tls.endpoint.tls && tls.tls == RedisTLSOptions(caFile: "\(dir)/redis-ca.pem", certFile: "\(dir)/client.pem", keyFile: "\(dir)/client.key",
                                                               serverName: "redis.example.com", insecureSkipVerify: false), "\(String(describing: tls.tls))")
        func variant(dropping prefixes: [String], format: String) throws -> Config {
            try variantOf(dropping: prefixes + tlsKeys, format: format)
        }
        let series = try variant(dropping: ["password_file", "max_age"], format: "timeseries")
        #expect(series.redis.format == .timeseries && series.redis.retentionMs == 7 * 86_400_000)
        #expect(series.redis.rollups.map(\.aggregation) == ["avg", "max"])
        let byAge = try variant(dropping: ["password_file", "maxlen", "retention", "rollups"], format: "stream")
        #expect(byAge.redis.maxAge == 86_400_000_000_000)
        let config = try variant(dropping: ["password_file", "max_age", "retention", "rollups"], format: "stream")
        #expect(config.agent.dataDir == nil)  // "${SPILLWAY_DATA_DIR:-}" unset: the default
        let withDir = try loader(["SPILLWAY_DATA_DIR": "/srv/spillway", "REDIS_PASSWORD": "pw"]).load(configPath: "\(dir)/agent.toml")
        #expect(withDir.agent.dataDir == "/srv/spillway")
        #expect(config.agent.tags == [Tag("dc", "eu-2"), Tag("env", "prod")])
        let disk = try #require(config.inputs.first { $0.plugin == "disk" }?.input as? DiskInput)
        #expect(disk.mountPoints.map(\.pattern) == ["/", "/var", "/mnt/*"])
        #expect(disk.ignoreFS == Set(DiskInput.defaultIgnoreFS))
        let cpu = try #require(config.inputs.first { $0.plugin == "cpu" })
        #expect(cpu.nameOverride == "cpu" && cpu.tags == [Tag("role", "web")])
        #expect(cpu.key?.text == "metrics:{host}:cpu:{tag.cpu}" && cpu.maxlen == 10000)
        #expect(config.redis.endpoint.username == "spillway" && config.redis.endpoint.password == "pw")
        #expect(config.redis.maxAge == nil && config.redis.maxlen == 100000 && config.redis.ids == .explicit)
        #expect((config.inputs.first { $0.plugin == "net" }?.input as? NetInput)?.interfaces.count == 3)
        let tail = try #require(config.inputs.first { $0.plugin == "tail" })
        let t = try #require(tail.input as? TailInput).options
        #expect(t.exclude.map(\.pattern) == ["*.gz", "/var/log/app/debug-*"] && t.parser.format == .json)
        #expect(t.parser.tagKeys == ["tenant"] && t.parser.timestampKey == "ts" && t.parser.timestampFormat == .unixMs)
        #expect(t.maxLineBytes == 65536 && t.partialTimeout == 5_000_000_000 && t.rotateWait == 5_000_000_000 && t.maxOpenFiles == 256)
        #expect(tail.key?.text == "logs:{host}:{tag.tenant}" && tail.maxlen == 20000)
    }
}

/// The Redis password prints as *** through every printing path of every value holding it: a
/// library logging a service's description (ServiceGroup does, at debug) prints the config in it.
@Suite struct SecretRedaction {
    func everyPrinting(_ value: Any) -> String {
        var dumped = ""
        dump(value, to: &dumped)
        var mirrored = ""
        func walk(_ v: Any, depth: Int) {
            guard depth < 12 else { return }
            for child in Mirror(reflecting: v).children {
                mirrored += "\(child.label ?? "") \(child.value)\n"
                walk(child.value, depth: depth + 1)
            }
        }
        walk(value, depth: 0)
        return [String(describing: value), String(reflecting: value), "\(value)", dumped, mirrored].joined(separator: "\n")
    }

    @Test func passwordFromTheURLOrAFileNeverPrints() throws {
        let dir = try makeTree([
            "url.toml": "[outputs.redis]\nurl = \"redis://u:Sup3rS3cret%21@127.0.0.1:6379/0\"\n[[inputs.mem]]\n",
            "file.toml": "[outputs.redis]\nusername = \"u\"\npassword_file = \"pass\"\n[[inputs.mem]]\n",
            "pass": "Sup3rS3cret!\n",
            "plain.toml": "[outputs.redis]\npassword = \"Sup3rS3cret!\"\n[[inputs.mem]]\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["url.toml", "file.toml", "plain.toml"] {
            let config = try loader().load(configPath: "\(dir)/\(name)")
            #expect(config.redis.endpoint.password?.revealed == "Sup3rS3cret!", "\(name)")
            let text = everyPrinting(config) + everyPrinting(config.redis) + everyPrinting(config.redis.endpoint)
                + everyPrinting(config.redis.endpoint.password as Any)
            #expect(!text.contains("Sup3rS3cret"), "\(name): \(text)")
            #expect(text.contains("***"), "\(name)")
        }
        let secret = Secret("Sup3rS3cret!")
        #expect("\(secret)" == "***" && secret.debugDescription == "***" && Mirror(reflecting: secret).children.isEmpty)
    }
}

/// host_root: proc_root and sys_root default to its /proc and /sys; given ones win, in any file.
@Suite struct HostRoot {
    func agent(_ text: String, dropIn: String? = nil) throws -> AgentConfig {
        var files = ["agent.toml": text]
        if let dropIn { files["plugins.d/a.toml"] = dropIn }
        let dir = try makeTree(files)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try loader().load(configPath: "\(dir)/agent.toml").agent
    }

    @Test func defaultsFollowHostRoot() throws {
        let a = try agent("[agent]\nhost_root = \"/host\"\n[[inputs.disk]]\n")
        #expect(a.hostRoot == "/host" && a.procRoot == "/host/proc" && a.sysRoot == "/host/sys")
        let b = try agent("[agent]\nhost_root = \"/host\"\nproc_root = \"/hostproc\"\n[[inputs.disk]]\n")
        #expect(b.procRoot == "/hostproc" && b.sysRoot == "/host/sys")
        // Set in a drop-in file, after agent.toml's proc_root: proc_root still wins.
        let c = try agent("[agent]\nsys_root = \"/s\"\n[[inputs.disk]]\n", dropIn: "[agent]\nhost_root = \"/h\"\n")
        #expect(c.hostRoot == "/h" && c.procRoot == "/h/proc" && c.sysRoot == "/s")
        // "/" is the host itself; "" is the default.
        let d = try agent("[agent]\nhost_root = \"/\"\nproc_root = \"\"\n[[inputs.disk]]\n")
        #expect(d.hostRoot == "" && d.procRoot == "/proc" && d.sysRoot == "/sys")
    }

    @Test func relativeHostRootIsAnError() throws {
        let dir = try makeTree(["agent.toml": "[agent]\nhost_root = \"host\"\n[[inputs.disk]]\n"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let d = diagnostics { try loader().load(configPath: "\(dir)/agent.toml") }
        #expect(d.map(\.description).contains { $0.contains("agent.host_root: \"host\" is not an absolute path") }, "\(d)")
    }
}

/// deploy/: the DaemonSet's ConfigMap holds a valid config reading the node through /host, and the
/// pod mounts what that config reads; the Dockerfile sets the same roots.
@Suite struct Deploy {
    static let manifest = repoRoot.appendingPathComponent("deploy/kubernetes/spillway.yaml")

    /// The block scalar under `agent.toml: |`, unindented.
    static func embeddedConfig(_ yaml: String) throws -> String {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(lines.firstIndex { $0.trimmingCharacters(in: .whitespaces) == "agent.toml: |" })
        let indent = lines[start].prefix { $0 == " " }.count + 2
        var out: [String] = []
        for line in lines[(start + 1)...] {
            if !line.trimmingCharacters(in: .whitespaces).isEmpty, line.prefix(while: { $0 == " " }).count < indent { break }
            out.append(String(line.dropFirst(min(indent, line.count))))
        }
        return out.joined(separator: "\n")
    }

    @Test func configMapLoadsAndReadsTheNodeThroughHost() throws {
        let yaml = try String(contentsOf: Self.manifest, encoding: .utf8)
        let dir = try makeTree(["agent.toml": try Self.embeddedConfig(yaml)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try loader(["NODE_NAME": "node-7", "SPILLWAY_REDIS_URL": "redis://10.0.0.5:6379/0"])
            .load(configPath: "\(dir)/agent.toml")
        #expect(config.agent.hostname == "node-7")
        #expect(config.agent.hostRoot == "/host" && config.agent.procRoot == "/host/proc" && config.agent.sysRoot == "/host/sys")
        #expect(config.agent.dataDir == "/var/lib/spillway")
        #expect(config.inputs.map(\.plugin).sorted() == ["cpu", "disk", "diskio", "mem", "net", "system"])
        // The pod mounts the node's /, /proc and /sys there, the data_dir from the node, the config.
        for mount in ["mountPath: /host\n", "mountPath: /host/proc\n", "mountPath: /host/sys\n", "mountPath: /var/lib/spillway\n", "mountPath: /etc/spillway\n"] {
            #expect(yaml.contains(mount), "no \(mount)")
        }
        #expect(yaml.contains("hostNetwork: true") && yaml.contains("mountPropagation: HostToContainer"))
        #expect(yaml.contains("path: /var/lib/spillway\n            type: DirectoryOrCreate"))
        #expect(yaml.contains("fieldPath: spec.nodeName"))
    }

    @Test func dockerfileCopiesWhatExists() throws {
        let text = try String(contentsOf: repoRoot.appendingPathComponent("deploy/Dockerfile"), encoding: .utf8)
        #expect(text.contains("SPILLWAY_HOST_ROOT=/host") && text.contains("SPILLWAY_DATA_DIR=/var/lib/spillway"))
        for line in text.split(separator: "\n") where line.hasPrefix("COPY ") {
            let source = String(line.split(separator: " ")[1])
            if source == "deploy/spillway" { continue }  // the binary, built first (see the file's head)
            #expect(FileManager.default.fileExists(atPath: repoRoot.appendingPathComponent(source).path), "COPY \(source)")
        }
    }
}

/// `spillway config` and `spillway plugins NAME` print samples embedded in the binary
/// (Sources/SpillwayInputs/Samples.swift, written by scripts/embed-samples): they are the shipped
/// files, every input has one, and each documents every option its input takes.
@Suite struct EmbeddedSamples {
    @Test func embeddedSamplesAreTheShippedFiles() throws {
        let agent = try String(contentsOf: repoRoot.appendingPathComponent("agent.toml"), encoding: .utf8)
        #expect(Samples.agent == agent, "agent.toml changed: run `make samples`")
        let dir = repoRoot.appendingPathComponent("plugins.d")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".toml") }.sorted()
        #expect(Samples.plugins.map(\.file) == files, "plugins.d changed: run `make samples`")
        for (file, text) in Samples.plugins {
            let shipped = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            #expect(text == shipped, "plugins.d/\(file) changed: run `make samples`")
        }
    }

    @Test func everyInputHasASampleNamingEveryOption() {
        for d in InputRegistry.all {
            guard let sample = Samples.plugins.first(where: { $0.file == "\(d.name).toml" })?.text else {
                Issue.record("no plugins.d/\(d.name).toml")
                continue
            }
            let common: Set<String> = ["interval", "name_override", "tags", "key", "maxlen"]
            for o in d.options where !common.contains(o.key) {
                #expect(sample.contains("\(o.key) ="), "plugins.d/\(d.name).toml does not show option \(o.key)")
            }
        }
    }

    @Test func optionsListDefaults() {
        let cpu = InputRegistry.all.first { $0.name == "cpu" }!.options
        #expect(cpu.map(\.key) == ["interval", "name_override", "tags", "key", "maxlen", "percpu", "totalcpu"])
        #expect(cpu.first { $0.key == "percpu" }?.default == "true")
        let tail = InputRegistry.all.first { $0.name == "tail" }!.options
        #expect(tail.first { $0.key == "max_line_bytes" }?.default == "\"64KiB\"")
        #expect(tail.first { $0.key == "watch_interval" }?.default == "\"1s\"")
    }
}

/// The documentation cannot drift from the code: every key the loader takes (found by reading empty
/// tables, `tableOptions()` and each input's `options`) is documented, as `key` in a table row of
/// the reference, and every built-in input has its section.
@Suite struct DocumentedKeys {
    static let reference = repoRoot.appendingPathComponent("docs/configuration.md")
    static let inputs = repoRoot.appendingPathComponent("docs/inputs.md")

    @Test func everyKeyIsDocumented() throws {
        let text = try String(contentsOf: Self.reference, encoding: .utf8)
        let inputs = try String(contentsOf: Self.inputs, encoding: .utf8)
        for (table, options) in loader().tableOptions() {
            for o in options {
                #expect(text.contains("| `\(o.key)` |") || text.contains("| `\(table).\(o.key)` |"),
                        "[\(table)] \(o.key) is not documented in \(Self.reference.lastPathComponent)")
            }
        }
        // The options every input takes, in configuration.md; each input's own, in its section of
        // inputs.md.
        for key in ["interval", "name_override", "tags", "key", "maxlen"] {
            #expect(text.contains("| `\(key)` |"), "the input option \(key) is not documented in configuration.md")
        }
        for d in InputRegistry.all {
            guard let start = inputs.range(of: "\n## `\(d.name)`") else {
                Issue.record("input \(d.name) has no section in docs/inputs.md")
                continue
            }
            let section = inputs[start.upperBound...].prefix { _ in true }
            let end = section.range(of: "\n## ")?.lowerBound ?? section.endIndex
            // The first cell of a table row names it (alone, or with others: `command`, `env`).
            let firstCells = section[..<end].split(separator: "\n").filter { $0.hasPrefix("| `") }.map { $0.dropFirst(2).prefix { $0 != "|" } }
            for o in d.options where !["interval", "name_override", "tags", "key", "maxlen"].contains(o.key) {
                #expect(firstCells.contains { $0.contains("`\(o.key)`") }, "inputs.\(d.name) \(o.key) is not documented in its section of docs/inputs.md")
            }
        }
    }
}

/// `[agent] http_listen` and `[agent] internal`.
@Suite struct SelfMetricsConfig {
    @Test func httpListenForms() {
        func parse(_ s: String) -> HTTPListen? { try? HTTPListen.parse(s).get() }
        #expect(parse("127.0.0.1:9469") == HTTPListen(host: "127.0.0.1", port: 9469))
        #expect(parse(":9469") == HTTPListen(host: "127.0.0.1", port: 9469))
        #expect(parse("9469") == HTTPListen(host: "127.0.0.1", port: 9469))
        #expect(parse("localhost:80") == HTTPListen(host: "127.0.0.1", port: 80))
        #expect(parse("0.0.0.0:9469") == HTTPListen(host: "0.0.0.0", port: 9469))
        #expect(parse("0.0.0.0:9469")?.isLoopback == false && parse(":1")?.isLoopback == true)
        #expect(parse("[::1]:9469") == HTTPListen(host: "::1", port: 9469, isIPv6: true))
        #expect(parse("[::1]:9469")?.description == "[::1]:9469")
        for bad in ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "example.com:80", "1.2.3:80", "256.1.1.1:80", "[::1]", "[zz]:80", "x"] {
            #expect(parse(bad) == nil, "\(bad)")
        }
    }

    @Test func agentKeys() throws {
        let dir = try makeTree(["agent.toml": """
            [agent]
            http_listen = ":19469"
            internal = false
            [[inputs.mem]]
            """])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try loader().load(configPath: "\(dir)/agent.toml")
        #expect(config.agent.httpListen == HTTPListen(host: "127.0.0.1", port: 19469))
        #expect(config.agent.internalMetrics == false)
        #expect(config.warnings.isEmpty, "\(config.warnings)")
        let open = try makeTree(["agent.toml": "[agent]\nhttp_listen = \"0.0.0.0:9469\"\n[[inputs.mem]]\n"])
        defer { try? FileManager.default.removeItem(atPath: open) }
        let o = try loader().load(configPath: "\(open)/agent.toml")
        #expect(o.agent.httpListen == HTTPListen(host: "0.0.0.0", port: 9469))
        #expect(o.warnings.map(\.description).contains { $0.contains("agent.http_listen") && $0.contains("not a loopback address") }, "\(o.warnings)")
        // Defaults: off, and the internal input on.
        let plain = try makeTree(["agent.toml": "[[inputs.mem]]\n"])
        defer { try? FileManager.default.removeItem(atPath: plain) }
        let d = try loader().load(configPath: "\(plain)/agent.toml")
        #expect(d.agent.httpListen == nil && d.agent.internalMetrics)
        // A bad address is located and explained.
        let bad = try makeTree(["agent.toml": "[agent]\nhttp_listen = \"example.com:80\"\n[[inputs.mem]]\n"])
        defer { try? FileManager.default.removeItem(atPath: bad) }
        let problems = diagnostics { try loader().load(configPath: "\(bad)/agent.toml") }.map(\.description)
        #expect(problems.count == 1 && problems[0].contains("agent.http_listen") && problems[0].contains("host names are not resolved"), "\(problems)")
    }
}

/// check warns about an exec or execd program that is not there now.
@Test func checkWarnsAboutAMissingExecProgram() throws {
    let dir = try makeTree(["agent.toml": "[[inputs.exec]]\ncommand = [\"no-such-program-spillway\"]\n[[inputs.execd]]\ncommand = [\"./absent.sh\"]\n[[inputs.exec]]\ncommand = [\"/bin/sh\", \"-c\", \"true\"]\n"])
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let config = try loader().load(configPath: "\(dir)/agent.toml")
    let warnings = Preflight.warnings(config).map(\.description)
    #expect(warnings.contains { $0.contains("inputs.exec[0].command: \"no-such-program-spillway\" is not found in PATH") && $0.contains("./no-such-program-spillway") }, "\(warnings)")
    #expect(warnings.contains { $0.contains("inputs.execd[0].command: \"\(dir)/absent.sh\" is not an executable file now") }, "\(warnings)")
    #expect(!warnings.contains { $0.contains("inputs.exec[1]") }, "\(warnings)")
}
