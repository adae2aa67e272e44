import Foundation
import SpillwayConfig
import SpillwayCore

/// What `check` (and `run`, in its log) says beyond the configuration's own validation: problems
/// that depend on the machine now (files, the data_dir) or on inputs and the output together.
public enum Preflight {
    /// Warnings: a tail pattern that matches no file now; a tail input whose records carry no
    /// numeric field under `format = "timeseries"` (every record would be rejected).
    public static func warnings(_ config: Config) -> [Diagnostic] {
        var out: [Diagnostic] = []
        // A container that reads the host's /proc but not its /: disk would name the host's mounts
        // and measure the container's own paths.
        let agentFile = config.files.first ?? ""
        if config.agent.hostRoot.isEmpty, config.agent.procRoot != "/proc",
           config.inputs.contains(where: { $0.input is DiskInput }) {
            out.append(Diagnostic(file: agentFile, line: nil, keyPath: "agent.proc_root",
                                  message: "proc_root is \"\(config.agent.procRoot)\" but host_root is not set: disk reads that mount table and measures this machine's own paths under its names",
                                  fix: "in a container, mount the host's / (e.g. at /host) and set [agent] host_root = \"/host\" instead of proc_root"))
        }
        // host_root with a proc_root elsewhere (an older agent.toml's "/proc"): the mount table and
        // the interfaces would be this container's.
        let agent = config.agent
        if !agent.hostRoot.isEmpty, !agent.procRoot.hasPrefix(agent.hostRoot + "/"),
           config.inputs.contains(where: { $0.input is DiskInput || $0.input is NetInput }) {
            out.append(Diagnostic(file: agentFile, line: nil, keyPath: "agent.proc_root",
                                  message: "host_root is \"\(agent.hostRoot)\" but proc_root is \"\(agent.procRoot)\", not below it: disk and net read this container's mount table and interfaces, not the host's",
                                  fix: "remove proc_root (it then defaults to host_root/proc), or set it below host_root"))
        }
        // host_root that is not the host's / (the mount was forgotten): every procfs input would fail.
        if !agent.hostRoot.isEmpty {
            var isDir: ObjCBool = false
            if !FileManager.default.fileExists(atPath: agent.hostRoot, isDirectory: &isDir) || !isDir.boolValue {
                out.append(Diagnostic(file: agentFile, line: nil, keyPath: "agent.host_root",
                                      message: "host_root \"\(agent.hostRoot)\" is not a directory here",
                                      fix: "mount the host's / there (docker run -v /:\(agent.hostRoot):ro,rslave; Kubernetes: a hostPath volume of /), or leave host_root out on the host itself"))
            } else if !FileManager.default.isReadableFile(atPath: agent.procRoot + "/stat") {
                out.append(Diagnostic(file: agentFile, line: nil, keyPath: "agent.proc_root",
                                      message: "\(agent.procRoot)/stat cannot be read: the host's procfs is not at \(agent.procRoot)",
                                      fix: "mount the host's /proc there (docker run -v /proc:\(agent.procRoot):ro), or set proc_root"))
            }
        }
        var index: [String: Int] = [:]
        for instance in config.inputs {
            let n = index[instance.plugin, default: 0]
            index[instance.plugin] = n + 1
            // exec/execd: a program that is not there now (a typo, or a bare name meant as ./name).
            let command = (instance.input as? ExecInput)?.options.command ?? (instance.input as? ExecdInput)?.options.command
            if let command, let program = command.argv.first, !program.isEmpty, let why = Self.programProblem(program, env: command.env) {
                out.append(Diagnostic(file: instance.file, line: instance.line, keyPath: "inputs.\(instance.plugin)[\(n)].command",
                                      message: why, fix: program.contains("/") ? "check the path and its execute permission"
                                          : "a program beside the config file is written ./\(program); else install it in the PATH the command gets"))
            }
            guard let tail = instance.input as? TailInput else { continue }
            let o = tail.options
            let keyPath = "inputs.tail[\(n)]"
            for pattern in o.files where GlobWalker.expand([pattern], exclude: o.exclude).isEmpty {
                out.append(Diagnostic(file: instance.file, line: instance.line, keyPath: "\(keyPath).files",
                                      message: "\"\(pattern.pattern)\" matches no file now",
                                      fix: "check the path; a file that appears later is followed from its start"))
            }
            if config.redis.format == .timeseries, o.parser.format == .raw {
                out.append(Diagnostic(file: instance.file, line: instance.line, keyPath: "\(keyPath).format",
                                      message: "format \"raw\" gives records with no numeric field (only message): under [outputs.redis] format = \"timeseries\" every one would be rejected",
                                      fix: "parse numbers out with format = \"json\" or \"logfmt\", or write streams (format = \"stream\")"))
            }
        }
        return out
    }

    /// Why `program` cannot be run now (with `/`: not an executable file; without: not in the PATH
    /// the command gets), or nil.
    static func programProblem(_ program: String, env: [Tag]) -> String? {
        if program.contains("/") {
            return access(program, X_OK) == 0 ? nil : "\"\(program)\" is not an executable file now"
        }
        let path = env.first { $0.key == "PATH" }?.value ?? ProcessInfo.processInfo.environment["PATH"] ?? ExecCommand.defaultPath
        for dir in path.split(separator: ":") where access("\(dir)/\(program)", X_OK) == 0 { return nil }
        return "\"\(program)\" is not found in PATH (\(path))"
    }

    /// Why `data_dir` cannot be used by this user (it cannot be created, or is not a writable
    /// directory), as a located problem; nil when it can.
    public static func dataDirProblem(_ config: Config, resolved: String) -> Diagnostic? {
        guard let why = DataDirectory.problem(resolved) else { return nil }
        let fix = config.agent.dataDir == nil
            ? "create \(resolved) for this user, or set [agent] data_dir"
            : "create it for the user the agent runs as (or make it and its files writable by that user), or set [agent] data_dir to a directory it may write"
        if let at = config.agent.dataDirLocation {
            return Diagnostic(file: at.file, line: at.line, keyPath: at.keyPath, message: why, fix: fix)
        }
        return Diagnostic(file: config.files.first ?? "", line: nil, keyPath: "agent.data_dir", message: "the default data_dir: \(why)", fix: fix)
    }
}
