import Foundation
import SpillwayConfig
import SpillwayCore
@testable import SpillwayInputs
import Testing

/// `[[inputs.exec]]` and `[[inputs.execd]]` options: the shipped samples with every option
/// uncommented, defaults, and errors.
@Suite struct ExecConfig {
    func sample(_ name: String) throws -> String {
        ShippedConfig.uncommented(try String(contentsOf: repoRoot.appendingPathComponent("plugins.d/\(name)"), encoding: .utf8))
    }

    @Test func theShippedSamplesLoadUncommented() throws {
        let dir = try makeTree(["agent.toml": "[agent]\nhostname = \"h\"\n", "plugins.d/exec.toml": try sample("exec.toml"),
                                "plugins.d/execd.toml": try sample("execd.toml")])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try loader().load(configPath: "\(dir)/agent.toml")
        let exec = try #require(config.inputs.first { $0.plugin == "exec" })
        let e = try #require(exec.input as? ExecInput).options
        #expect(e.command.argv == ["\(dir)/examples/exec-uptime.sh"])
        #expect(e.dataFormat == .influx && e.timeout == 5_000_000_000 && e.killGrace == 2_000_000_000)
        #expect(e.command.env == [Tag("PROBE_MODE", "fast")] && e.maxOutput == 4 << 20 && e.maxStderr == 1024)
        #expect(exec.interval == 10_000_000_000)
        let d = try #require(config.inputs.first { $0.plugin == "execd" }?.input as? ExecdInput).options
        #expect(d.command.argv == ["\(dir)/examples/execd-ticker.sh"])
        #expect(d.restartDelay == 1_000_000_000 && d.maxRestartDelay == 60_000_000_000 && d.killGrace == 5_000_000_000)
        #expect(d.maxLineBytes == 65536 && d.maxStderrLine == 1024 && d.stderrLinesPerMinute == 10 && d.command.env == [Tag("TICK", "1")])
    }

    @Test func theShippedConfigHasNoExecInput() throws {
        let config = try loader().load(configPath: repoRoot.appendingPathComponent("agent.toml").path)
        #expect(!config.inputs.contains { $0.plugin == "exec" || $0.plugin == "execd" })
    }

    @Test func theExampleScriptsPrintLineProtocol() throws {
        let p = Process()
        p.executableURL = repoRoot.appendingPathComponent("examples/exec-uptime.sh")
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let (records, bad, _) = LineProtocolParser.parseLines(Array(out.fileHandleForReading.readDataToEndOfFile()), defaultTimestamp: 1)
        #expect(bad.isEmpty && records.count == 1 && records.first?.name == "uptime")
        #expect(FileManager.default.isExecutableFile(atPath: repoRoot.appendingPathComponent("examples/execd-ticker.sh").path))
    }

    @Test func mistakesAreReported() throws {
        let dir = try makeTree(["agent.toml": """
            [[inputs.exec]]
            command = []
            data_format = "jsn"
            [[inputs.exec]]
            command = "/bin/true"
            [[inputs.execd]]
            command = ["x"]
            interval = "1s"
            restart_delay = "10s"
            max_restart_delay = "1s"
            env = { "A=B" = "c" }
            """])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let d = diagnostics { try loader().load(configPath: "\(dir)/agent.toml") }
        let text = d.map { "\($0.keyPath): \($0.message)" }
        #expect(text.contains("inputs.exec[0].command: needs the program and its arguments"), "\(text)")
        #expect(text.contains("inputs.exec[0].data_format: unknown data_format \"jsn\" (did you mean \"json\"?)"), "\(text)")
        #expect(text.contains { $0.hasPrefix("inputs.exec[1].command: expected an array of strings") }, "\(text)")
        #expect(text.contains("inputs.execd[0].interval: execd runs continuously and takes no interval"), "\(text)")
        #expect(text.contains("inputs.execd[0].max_restart_delay: shorter than restart_delay"), "\(text)")
        #expect(text.contains { $0.hasPrefix("inputs.execd[0].env: variable \"A=B\"") }, "\(text)")
    }
}
