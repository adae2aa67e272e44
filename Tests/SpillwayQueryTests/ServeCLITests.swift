import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import RedisSink
import SpillwayTestSupport
import Testing

/// `spillway serve` as a user runs it: the binary with the shipped agent.toml pointed at a
/// redis-server the agent's writer filled (streams, the last 30 minutes), asked as Grafana's
/// Prometheus data source asks (POSTed forms, the label browser, the health check) and by a real
/// client of the Prometheus API, promtool (Debian's, through scripts/promtool: installed, or fetched
/// from the archive by `make test`).
@Suite(.serialized) struct ServeCommand {
    final class Rig {
        let server: RedisServer
        let redis: RedisConnection
        let dir: URL
        let port: Int
        let process: Process
        let data: Dataset
        var url: String { "http://127.0.0.1:\(port)" }

        init() throws {
            server = try RedisServer()
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            data = Dataset(start: (now - 1_800_000) / 60_000 * 60_000, count: 180)
            try fill(try outputConfig(server.url, timeseries: false), data.records())
            redis = try connect(server.url)
            dir = try configDir(try shippedConfig(url: server.url, timeseries: false))
            port = try RedisServer.freePort()
            process = Process()
            process.executableURL = URL(fileURLWithPath: spillwayBin)
            process.arguments = ["serve", "--config", "agent.toml", "--listen", "127.0.0.1:\(port)"]
            process.currentDirectoryURL = dir
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            process.standardError = try FileHandle(forWritingTo: { () -> URL in
                let u = dir.appendingPathComponent("serve.log")
                _ = FileManager.default.createFile(atPath: u.path, contents: nil)
                return u
            }())
            try process.run()
            // Up within 10 s (it binds before it logs that it serves).
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, !log.contains("serving the Prometheus query API"), process.isRunning { usleep(50_000) }
            #expect(log.contains("serving the Prometheus query API"), "\(log)")
        }

        var log: String { (try? String(contentsOf: dir.appendingPathComponent("serve.log"), encoding: .utf8)) ?? "" }

        /// A request as Grafana's data source makes it: GET with a query string, or POST with a form.
        func http(_ path: String, form: [(String, String)]? = nil) async throws -> (status: Int, json: [String: Any]) {
            var request = URLRequest(url: URL(string: url + path)!)
            request.timeoutInterval = 10
            if let form {
                request.httpMethod = "POST"
                request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
                var allowed = CharacterSet.alphanumerics
                allowed.insert(charactersIn: "-._~")
                request.httpBody = Data(form.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&").utf8)
            }
            let session = URLSession(configuration: .ephemeral)
            defer { session.finishTasksAndInvalidate() }
            let (data, response) = try await session.data(for: request)
            return ((response as! HTTPURLResponse).statusCode, try jsonObject(String(decoding: data, as: UTF8.self)))
        }

        func promtool(_ args: [String]) throws -> CommandResult {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/bash")
            p.arguments = [repo.appendingPathComponent("scripts/promtool").path] + args
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return CommandResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
        }

        /// The values of one cpu series, from XRANGE.
        func raw(host: String, cpu: String, field: String) throws -> [(Int64, Double)] {
            try streamEntries(redis, "metrics:\(host):cpu").compactMap { e in
                guard e.fields.contains(where: { $0 == ("tag_cpu", cpu) }), let v = e.fields.first(where: { $0.0 == field }) else { return nil }
                return (e.ms, Double(v.1)!)
            }
        }

        /// SIGTERM; the exit status (within 10 s).
        func stop() -> Int32 {
            guard process.isRunning else { return process.terminationStatus }
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning, Date() < deadline { usleep(20_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                Issue.record("serve did not stop within 10 s of SIGTERM")
            }
            process.waitUntilExit()
            return process.terminationStatus
        }

        deinit {
            _ = stop()
            server.stop()
            server.removeFiles()
            try? FileManager.default.removeItem(at: dir)
        }
    }

    @Test func grafanasRequestsAreAnswered() async throws {
        let rig = try Rig()
        let t = rig.data.end / 1000 + 5
        // "Save & test": POST /api/v1/query, query=1+1.
        let health = try await rig.http("/api/v1/query", form: [("query", "1+1"), ("time", "\(t)")])
        #expect(health.status == 200 && (health.json["data"] as? [String: Any])?["resultType"] as? String == "scalar", "\(health.json)")
        #expect(((health.json["data"] as? [String: Any])?["result"] as? [Any])?.last as? String == "2")
        let build = try await rig.http("/api/v1/status/buildinfo")
        #expect(build.status == 200 && build.json["status"] as? String == "success")
        // The metric and label browsers.
        let names = try await rig.http("/api/v1/label/__name__/values?start=\(t - 3600)&end=\(t)")
        #expect(names.json["data"] as? [String] == ["app_level", "cpu_usage_system", "cpu_usage_user"], "\(names.json)")
        let labels = try await rig.http("/api/v1/labels?start=\(t - 3600)&end=\(t)")
        #expect(labels.json["data"] as? [String] == ["__name__", "cpu", "host"])
        // A panel: POST /api/v1/query_range with $__interval expanded, start and end at multiples of the step.
        let end = rig.data.end / 60_000 * 60_000 / 1000, start = end - 1200
        let panel = try await rig.http("/api/v1/query_range", form: [
            ("query", #"avg_over_time(cpu_usage_user{host="web-1"}[1m])"#), ("start", "\(start)"), ("end", "\(end)"), ("step", "60"),
        ])
        #expect(panel.status == 200)
        let result = (panel.json["data"] as? [String: Any])?["result"] as? [[String: Any]] ?? []
        #expect(result.count == 2)
        for r in result {
            let cpu = (r["metric"] as? [String: String])?["cpu"] ?? ""
            let raw = try rig.raw(host: "web-1", cpu: cpu, field: "usage_user")
            let values = (r["values"] as? [[Any]] ?? []).map { (Int64($0[0] as! Double), Double($0[1] as! String)!) }
            #expect(values.count == 21, "\(cpu): \(values.count)")
            for (at, v) in values {
                let w = raw.filter { $0.0 > (at - 60) * 1000 && $0.0 <= at * 1000 }.map(\.1)
                #expect(close(v, w.reduce(0, +) / Double(w.count)), "\(cpu) at \(at)")
            }
        }
        // Not in the subset: 400, in Prometheus's error shape.
        let bad = try await rig.http("/api/v1/query", form: [("query", "histogram_quantile(0.9, rate(x[5m]))")])
        #expect(bad.status == 400 && bad.json["status"] as? String == "error" && bad.json["errorType"] as? String == "bad_data")
        #expect((bad.json["error"] as? String)?.contains("function \"histogram_quantile\" is not supported") == true)
        #expect(rig.stop() == 0)
        #expect(rig.log.contains("stopped"))
    }

    @Test func promtoolReadsTheSameFigures() throws {
        let rig = try Rig()
        let last = try rig.raw(host: "web-2", cpu: "cpu0", field: "usage_system").last!
        let at = last.0 / 1000 + 1
        let instant = try rig.promtool(["query", "instant", "--time=\(at)", rig.url, #"cpu_usage_system{host="web-2",cpu="cpu0"}"#])
        #expect(instant.status == 0, "\(instant)")
        #expect(instant.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            == #"cpu_usage_system{cpu="cpu0", host="web-2"} => \#(PrometheusAPIFormat.value(last.1)) @[\#(at)]"#, "\(instant)")
        let end = rig.data.end / 1000, start = end - 60
        let range = try rig.promtool(["query", "range", "--start=\(start)", "--end=\(end)", "--step=10s", rig.url, #"max_over_time(cpu_usage_user{host="web-1",cpu="cpu-total"}[10s])"#])
        #expect(range.status == 0, "\(range)")
        let raw = try rig.raw(host: "web-1", cpu: "cpu-total", field: "usage_user")
        let want = stride(from: start, through: end, by: 10).compactMap { t -> String? in
            raw.filter { $0.0 > (t - 10) * 1000 && $0.0 <= t * 1000 }.map(\.1).max().map { "\(PrometheusAPIFormat.value($0)) @[\(t)]" }
        }
        let got = range.stdout.split(separator: "\n").dropFirst().map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(got == want, "\(range.stdout)")
        let series = try rig.promtool(["query", "series", "--match=cpu_usage_user{cpu=\"cpu0\"}", rig.url])
        #expect(series.stdout.split(separator: "\n").map(String.init)
            == [#"{__name__="cpu_usage_user", cpu="cpu0", host="web-1"}"#, #"{__name__="cpu_usage_user", cpu="cpu0", host="web-2"}"#], "\(series)")
        let hosts = try rig.promtool(["query", "labels", rig.url, "host"])
        #expect(hosts.stdout.split(separator: "\n").map(String.init) == ["web-1", "web-2"], "\(hosts)")
        let refused = try rig.promtool(["query", "instant", rig.url, "cpu_usage_user offset 5m"])
        #expect(refused.status != 0 && refused.stderr.contains("the offset modifier is not supported"), "\(refused)")
    }

    @Test func badCommandLinesAndABusyPort() throws {
        let dir = try configDir(try shippedConfig(url: "redis://127.0.0.1:1/0", timeseries: false))
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = try spillway(["serve", "--config", "agent.toml", "--listen", "nowhere"], cwd: dir)
        #expect(bad.status == 2 && bad.stderr.contains("--listen"), "\(bad)")
        let timeout = try spillway(["serve", "--config", "agent.toml", "--timeout", "soon"], cwd: dir)
        #expect(timeout.status == 2 && timeout.stderr.contains("--timeout"), "\(timeout)")
        // A port a listener holds: one line, exit 1.
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(holder, 1)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(holder, $0, &len) } }
        let busy = try spillway(["serve", "--config", "agent.toml", "--listen", "127.0.0.1:\(UInt16(bigEndian: addr.sin_port))"], cwd: dir, timeout: 20)
        #expect(busy.status == 1 && busy.stderr.hasPrefix("spillway: cannot listen on 127.0.0.1:"), "\(busy)")
    }
}

/// Values as the API writes them (and promtool prints them back).
enum PrometheusAPIFormat {
    static func value(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)"
    }
}
