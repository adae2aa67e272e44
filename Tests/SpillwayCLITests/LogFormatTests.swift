import Foundation
import SpillwayTestSupport
import Testing

/// `[agent] log_format`: every line `run` writes parses back in its format, with ts, level and msg,
/// and a value holding blanks, quotes and `=` survives the round trip.
@Suite(.serialized) struct LogFormats {
    /// Parses one logfmt line: `key=value` pairs, values bare or quoted with `\"`, `\\`, `\n`, `\t`, `\r`, `\uXXXX`.
    static func logfmt(_ line: String) -> [String: String]? {
        var out: [String: String] = [:]
        var s = Substring(line)
        while !s.isEmpty {
            s = s.drop { $0 == " " }
            guard let eq = s.firstIndex(of: "=") else { return s.isEmpty ? out : nil }
            let key = String(s[..<eq])
            s = s[s.index(after: eq)...]
            var value = ""
            if s.first == "\"" {
                s = s.dropFirst()
                var closed = false
                while let c = s.first {
                    s = s.dropFirst()
                    if c == "\"" { closed = true; break }
                    if c == "\\" {
                        guard let e = s.first else { return nil }
                        s = s.dropFirst()
                        switch e {
                        case "n": value += "\n"
                        case "t": value += "\t"
                        case "r": value += "\r"
                        case "u":
                            guard let v = UInt32(String(s.prefix(4)), radix: 16), let u = Unicode.Scalar(v) else { return nil }
                            value.unicodeScalars.append(u)
                            s = s.dropFirst(4)
                        default: value.append(e)
                        }
                    } else {
                        value.append(c)
                    }
                }
                guard closed else { return nil }
            } else {
                let end = s.firstIndex(of: " ") ?? s.endIndex
                value = String(s[..<end])
                guard !value.contains("\""), !value.contains("=") else { return nil }
                s = s[end...]
            }
            out[key] = value
        }
        return out
    }

    @Test(arguments: ["text", "logfmt", "json"])
    func everyLineParsesBack(_ format: String) throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        // A proc_root that does not exist, with a space, a quote and an = in its name: system fails,
        // and its error (with that path) is logged.
        let odd = "/nonexistent dir \"quoted\" a=b"
        let agent = try AgentProcess(redisPort: server.port, inputs: "[[inputs.mem]]\n[[inputs.system]]",
                                     agentExtra: "log_format = \"\(format)\"\nproc_root = \"\(odd.replacingOccurrences(of: "\"", with: "\\\""))\"")
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "counters.input_errors") >= 1 }
        #expect(agent.stop() == 0)
        let lines = agent.logText.split(separator: "\n").map(String.init)
        #expect(lines.count >= 4, "\(agent.logText)")
        let ts = #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#
        var sawError = false
        for line in lines {
            var fields: [String: String]
            switch format {
            case "json":
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
                fields = try #require(object, "not a JSON object of strings: \(line)")
            case "logfmt":
                fields = try #require(Self.logfmt(line), "not logfmt: \(line)")
            default:
                // text: `ts level msg key=value…` (msg is the words before the first key=value).
                let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
                try #require(parts.count >= 2, "\(line)")
                fields = ["ts": parts[0], "level": parts[1]]
                if parts.count == 3, let kv = parts[2].range(of: #" [a-z_.]+=(\"|[^ ])"#, options: .regularExpression) {
                    fields["msg"] = String(parts[2][..<kv.lowerBound])
                    fields.merge(Self.logfmt(String(parts[2][kv.lowerBound...])) ?? [:]) { $1 }
                } else if parts.count == 3 {
                    fields["msg"] = parts[2]
                }
            }
            #expect(fields["ts"]?.range(of: ts, options: .regularExpression) != nil, "\(line)")
            #expect(["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(fields["level"] ?? ""), "\(line)")
            #expect(!(fields["msg"] ?? "").isEmpty, "\(line)")
            // Metadata keys are dotted by what they belong to (`input.name`, `redis.key`), but `error`.
            #expect(fields.keys.allSatisfy { ["ts", "level", "msg", "error"].contains($0) || $0.contains(".") }, "\(line)")
            if fields["msg"]?.hasPrefix("input failed") == true {
                sawError = true
                #expect(fields["level"] == "error" && ["mem", "system"].contains(fields["input.name"] ?? ""), "\(line)")
                #expect(fields["error"]?.contains(odd) == true, "\(fields)")
            }
        }
        #expect(sawError, "\(agent.logText)")
    }

    @Test func unknownFormatIsAConfigError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-logfmt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("agent.toml")
        try "[agent]\nlog_format = \"xml\"\n[[inputs.mem]]\n".write(to: config, atomically: true, encoding: .utf8)
        let r = try spillway(["check", "--config", config.path])
        #expect(r.status == 2 && r.stderr.contains("agent.log_format: unknown log format \"xml\" (use \"text\", \"logfmt\" or \"json\")"), "\(r.stderr)")
    }
}
