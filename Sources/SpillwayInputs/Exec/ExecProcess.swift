import Glibc
import Subprocess
import SpillwayCore
import Synchronization

/// Set to stop a running command (agent shutdown, reload): its process group gets SIGTERM, then
/// SIGKILL after the grace period.
public final class ExecStop: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func stop() { flag.store(true, ordering: .relaxed) }
    public var isStopped: Bool { flag.load(ordering: .relaxed) }
}

/// The command line and environment of an `exec` or `execd` instance.
public struct ExecCommand: Sendable {
    /// `command`: the program and its arguments, run directly (never through a shell). A program
    /// without `/` is looked up in the PATH the command gets.
    public var argv: [String]
    /// `env`: variables added to (or replacing) the minimal environment.
    public var env: [Tag] = []

    /// Variables taken from the agent's own environment when set there; nothing else is passed.
    public static let passThrough = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"]
    /// PATH when the agent has none.
    public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    public init(argv: [String], env: [Tag] = []) {
        self.argv = argv
        self.env = env
    }

    /// How the command is named in logs and reports (its program).
    public var display: String { argv.first ?? "" }

    /// The environment the command gets: `passThrough` from `agentEnvironment`, then `env`.
    public func environment(agentEnvironment: [String: String]) -> [(String, String)] {
        var out: [(String, String)] = []
        for key in Self.passThrough {
            if let v = agentEnvironment[key] { out.append((key, v)) } else if key == "PATH" { out.append((key, Self.defaultPath)) }
        }
        for tag in env {
            out.removeAll { $0.0 == tag.key }
            out.append((tag.key, tag.value))
        }
        return out
    }

    func configuration() -> Configuration {
        var platform = PlatformOptions()
        // Its own process group, so the command and its children are signalled together.
        platform.processGroupID = 0
        let program = argv[0]
        let executable: Executable = program.contains("/") ? .path(.init(program)) : .name(program)
        // NUL-terminated: swift-subprocess 1.0.2 strdup()s each raw entry as it is.
        let rows = environment(agentEnvironment: Self.currentEnvironment()).map { Array("\($0.0)=\($0.1)".utf8) + [0] }
        return Configuration(executable: executable, arguments: Arguments(Array(argv.dropFirst())),
                             environment: .custom(rows), platformOptions: platform)
    }

    static func currentEnvironment() -> [String: String] {
        var out: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return out
    }
}

/// How a command ended.
public enum ExecEnd: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signaled(let s): "killed by signal \(s) (\(ExecEnd.signalName(s)))"
        }
    }

    static func signalName(_ s: Int32) -> String {
        switch s {
        case SIGTERM: "SIGTERM"
        case SIGKILL: "SIGKILL"
        case SIGSEGV: "SIGSEGV"
        case SIGABRT: "SIGABRT"
        case SIGINT: "SIGINT"
        case SIGHUP: "SIGHUP"
        case SIGPIPE: "SIGPIPE"
        case SIGBUS: "SIGBUS"
        case SIGFPE: "SIGFPE"
        case SIGILL: "SIGILL"
        default: "signal \(s)"
        }
    }

    init(_ status: TerminationStatus) {
        switch status {
        case .exited(let code): self = .exited(code)
        case .signaled(let s): self = .signaled(s)
        }
    }
}

/// What one run of an `exec` command gave.
public struct ExecResult: Sendable {
    public var pid: Int32
    public var end: ExecEnd
    /// Its stdout, at most `maxOutput` bytes.
    public var output: [UInt8]
    /// More than `maxOutput` bytes came: the command was stopped.
    public var outputTooLarge = false
    /// The first `maxStderr` bytes of its stderr, and how many more were thrown away.
    public var stderr: [UInt8]
    public var stderrDropped = 0
    /// It ran past `timeout` and was stopped.
    public var timedOut = false
    /// It was stopped because the agent stops.
    public var stopped = false
}

/// Limits of one `exec` run.
public struct ExecLimits: Sendable {
    public var timeout: Int64
    /// Between SIGTERM and SIGKILL to the process group.
    public var killGrace: Int64
    public var maxOutput: Int
    public var maxStderr: Int

    public init(timeout: Int64, killGrace: Int64, maxOutput: Int, maxStderr: Int) {
        self.timeout = timeout
        self.killGrace = killGrace
        self.maxOutput = maxOutput
        self.maxStderr = maxStderr
    }
}

/// Shared state of one run's readers and its watcher.
final class RunBox: Sendable {
    struct State {
        var output: [UInt8] = []
        var outputDone = false
        var outputTooLarge = false
        var stderr: [UInt8] = []
        var stderrDropped = 0
        var stderrDone = false
    }

    let state = Mutex(State())
}

public enum ExecProcess {
    /// Whether `pid` (our child, not yet reaped) has ended, without reaping it.
    static func hasEnded(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        let rc = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
        if rc != 0 { return errno == ECHILD }
        return info._sifields._sigchld.si_pid != 0
    }

    /// Signals the process group `pgid` (the command's pid: it leads its own group).
    static func signalGroup(_ pgid: pid_t, _ signal: Int32) {
        guard pgid > 0 else { return }
        _ = kill(-pgid, signal)
    }

    /// Sleeps `ns`; in a cancelled task (where `Task.sleep` returns at once) the thread sleeps, so
    /// a kill sequence still runs to its end without spinning.
    static func sleep(_ ns: Int64) async {
        if Task.isCancelled {
            usleep(UInt32(min(ns / 1000, 100_000)))
            return
        }
        try? await Task.sleep(for: .nanoseconds(ns))
    }

    /// Runs `command` once and collects its output: stdout up to `maxOutput` bytes (past that the
    /// command is stopped), stderr's first `maxStderr` bytes. Past `timeout`, or when `stop` is set,
    /// the process group gets SIGTERM, then SIGKILL `killGrace` later. When the command has ended,
    /// whatever it left running in its process group is killed (SIGKILL). Throws when it cannot be
    /// started.
    public static func run(_ command: ExecCommand, limits: ExecLimits, stop: ExecStop) async throws -> ExecResult {
        let box = RunBox()
        let outcome = try await Subprocess.run(command.configuration(), input: .none, output: .sequence, error: .sequence) { execution in
            let pid = execution.processIdentifier.value
            let watch = await withTaskGroup(of: (timedOut: Bool, stopped: Bool)?.self) { group in
                group.addTask {
                    do {
                        for try await chunk in execution.standardOutput {
                            let over = chunk.withUnsafeBytes { bytes -> Bool in
                                box.state.withLock { s in
                                    let room = limits.maxOutput - s.output.count
                                    if bytes.count > room {
                                        s.output.append(contentsOf: bytes.prefix(max(room, 0)))
                                        s.outputTooLarge = true
                                        return true
                                    }
                                    s.output.append(contentsOf: bytes)
                                    return false
                                }
                            }
                            if over { break }
                        }
                    } catch {}
                    box.state.withLock { $0.outputDone = true }
                    return nil
                }
                group.addTask {
                    do {
                        for try await chunk in execution.standardError {
                            chunk.withUnsafeBytes { bytes in
                                box.state.withLock { s in
                                    let room = max(limits.maxStderr - s.stderr.count, 0)
                                    s.stderr.append(contentsOf: bytes.prefix(room))
                                    s.stderrDropped += max(bytes.count - room, 0)
                                }
                            }
                        }
                    } catch {}
                    box.state.withLock { $0.stderrDone = true }
                    return nil
                }
                group.addTask {
                    await watchRun(pid: pid, box: box, limits: limits, stop: stop)
                }
                var result: (timedOut: Bool, stopped: Bool) = (false, false)
                for await r in group { if let r { result = r } }
                return result
            }
            // Still a zombie until this body returns: its group id cannot have been reused.
            signalGroup(pid, SIGKILL)
            return watch
        }
        let s = box.state.withLock { $0 }
        return ExecResult(pid: outcome.processIdentifier.value, end: ExecEnd(outcome.terminationStatus), output: s.output,
                          outputTooLarge: s.outputTooLarge, stderr: s.stderr, stderrDropped: s.stderrDropped,
                          timedOut: outcome.closureResult.timedOut, stopped: outcome.closureResult.stopped)
    }

    /// Polls until the command has ended and its output is read, stopping it (SIGTERM, then SIGKILL)
    /// past its timeout, when its output is too large, or on `stop`.
    static func watchRun(pid: pid_t, box: RunBox, limits: ExecLimits, stop: ExecStop, maxTick: Int64 = 20_000_000) async -> (timedOut: Bool, stopped: Bool) {
        let start = monotonicNanoseconds()
        var stage = 0
        var since: Int64 = 0
        var timedOut = false, stopped = false
        var tick: Int64 = 2_000_000
        while true {
            let now = monotonicNanoseconds()
            let ended = hasEnded(pid)
            let (outDone, errDone, tooLarge) = box.state.withLock { ($0.outputDone, $0.stderrDone, $0.outputTooLarge) }
            if ended && outDone && errDone { break }
            if stage == 0 {
                if now - start >= limits.timeout { timedOut = true }
                if stop.isStopped { stopped = true }
                if timedOut || stopped || tooLarge {
                    signalGroup(pid, SIGTERM)
                    stage = 1
                    since = now
                }
            } else if stage == 1, now - since >= limits.killGrace {
                signalGroup(pid, SIGKILL)
                stage = 2
                since = now
            } else if stage == 2, ended, now - since >= 1_000_000_000 {
                // Its output is held open by a process outside its group: give up on it.
                break
            }
            await sleep(tick)
            tick = min(tick * 2, maxTick)
        }
        return (timedOut, stopped)
    }
}

/// What `ExecProcess.runDaemon` reports besides lines.
public struct DaemonEvents: Sendable {
    /// A stdout line (without its newline), numbered from 1 for this start.
    public var line: @Sendable (ArraySlice<UInt8>, Int) async -> Void
    /// A line longer than the limit was dropped; its number.
    public var longLine: @Sendable (Int) -> Void
    /// The last line had no newline when the output ended (the process was killed mid-write, or
    /// exited without one): it may be cut short, so it is dropped; its number.
    public var cutLine: @Sendable (Int) -> Void
    /// A stderr line, cut at the limit.
    public var stderr: @Sendable (String) -> Void

    public init(line: @escaping @Sendable (ArraySlice<UInt8>, Int) async -> Void, longLine: @escaping @Sendable (Int) -> Void,
                cutLine: @escaping @Sendable (Int) -> Void = { _ in }, stderr: @escaping @Sendable (String) -> Void) {
        self.line = line
        self.longLine = longLine
        self.cutLine = cutLine
        self.stderr = stderr
    }
}

extension ExecProcess {
    /// Splits a byte stream into lines of at most `maxLine` bytes; longer ones are dropped whole.
    struct LineSplitter {
        let maxLine: Int
        var current: [UInt8] = []
        var dropping = false
        var number = 0

        /// Calls `line(bytes, number)` for each complete line, `long(number)` for each dropped one.
        mutating func feed(_ bytes: UnsafeRawBufferPointer, line: (ArraySlice<UInt8>, Int) -> Void, long: (Int) -> Void) {
            var start = 0
            for i in 0..<bytes.count where bytes[i] == 0x0A {
                append(bytes, start, i, long: long)
                number += 1
                if dropping { long(number) } else { line(current[...], number) }
                current.removeAll(keepingCapacity: true)
                dropping = false
                start = i + 1
            }
            append(bytes, start, bytes.count, long: long)
        }

        mutating func append(_ bytes: UnsafeRawBufferPointer, _ from: Int, _ to: Int, long: (Int) -> Void) {
            guard !dropping, from < to else { return }
            if current.count + (to - from) > maxLine {
                dropping = true
                current.removeAll(keepingCapacity: true)
                return
            }
            current.append(contentsOf: bytes[from..<to])
        }

        /// The last line, when the stream ended without a newline.
        mutating func finish(line: (ArraySlice<UInt8>, Int) -> Void, long: (Int) -> Void) {
            guard dropping || !current.isEmpty else { return }
            number += 1
            if dropping { long(number) } else { line(current[...], number) }
            current.removeAll()
            dropping = false
        }
    }

    /// Runs a long-running `command` until it ends or `stop` is set (then its process group gets
    /// SIGTERM, and SIGKILL `killGrace` later). Each stdout line goes to `events.line` (one at a
    /// time, in order); a line over `maxLine` bytes is dropped; stderr lines, cut at `maxStderrLine`
    /// bytes, go to `events.stderr`. `started` gets the pid. When it has ended, whatever it left in its
    /// process group is killed. Throws when it cannot be started.
    public static func runDaemon(_ command: ExecCommand, maxLine: Int, maxStderrLine: Int, killGrace: Int64, stop: ExecStop,
                                 started: @escaping @Sendable (Int32) -> Void, events: DaemonEvents) async throws -> ExecEnd {
        let box = RunBox()
        let outcome = try await Subprocess.run(command.configuration(), input: .none, output: .sequence, error: .sequence) { execution in
            let pid = execution.processIdentifier.value
            started(pid)
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    var splitter = LineSplitter(maxLine: maxLine)
                    var pending: [(ArraySlice<UInt8>, Int)] = []
                    var long: [Int] = []
                    do {
                        for try await chunk in execution.standardOutput {
                            chunk.withUnsafeBytes { bytes in
                                splitter.feed(bytes, line: { pending.append((Array($0)[...], $1)) }, long: { long.append($0) })
                            }
                            for n in long { events.longLine(n) }
                            long.removeAll()
                            for (l, n) in pending { await events.line(l, n) }
                            pending.removeAll()
                        }
                    } catch {}
                    // What is left has no newline: maybe cut short (a SIGKILL mid-write), never a record.
                    var cut: [Int] = []
                    splitter.finish(line: { cut.append($1) }, long: { long.append($0) })
                    for n in long { events.longLine(n) }
                    for n in cut { events.cutLine(n) }
                    box.state.withLock { $0.outputDone = true }
                }
                group.addTask {
                    var splitter = LineSplitter(maxLine: 1 << 20)
                    var lines: [String] = []
                    do {
                        for try await chunk in execution.standardError {
                            chunk.withUnsafeBytes { bytes in
                                splitter.feed(bytes, line: { l, _ in lines.append(String(decoding: l.prefix(maxStderrLine), as: UTF8.self)) },
                                              long: { _ in lines.append("(a stderr line over 1MiB, dropped)") })
                            }
                            for l in lines { events.stderr(l) }
                            lines.removeAll()
                        }
                    } catch {}
                    splitter.finish(line: { l, _ in lines.append(String(decoding: l.prefix(maxStderrLine), as: UTF8.self)) }, long: { _ in })
                    for l in lines { events.stderr(l) }
                    box.state.withLock { $0.stderrDone = true }
                }
                group.addTask {
                    _ = await watchRun(pid: pid, box: box, limits: ExecLimits(timeout: .max, killGrace: killGrace, maxOutput: 0, maxStderr: 0), stop: stop,
                                       maxTick: 100_000_000)
                }
            }
            signalGroup(pid, SIGKILL)
        }
        return ExecEnd(outcome.terminationStatus)
    }
}
