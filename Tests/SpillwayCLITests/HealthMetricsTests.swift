import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SpillwayTestSupport
import Testing

/// One request to the agent's endpoint on 127.0.0.1; nil when it cannot connect (or times out).
func http(_ port: Int, _ path: String, method: String = "GET") async -> (status: Int, body: String)? {
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
    request.httpMethod = method
    request.timeoutInterval = 3
    let session = URLSession(configuration: .ephemeral)
    defer { session.finishTasksAndInvalidate() }
    guard let (data, response) = try? await session.data(for: request), let h = response as? HTTPURLResponse else { return nil }
    return (h.statusCode, String(decoding: data, as: UTF8.self))
}

/// A TCP connection to 127.0.0.1:`port` that sends `sending` and then nothing; its fd, or nil.
func openConnection(_ port: Int, sending: String) -> Int32? {
    guard let fd = connectLoopback(port: port) else { return nil }
    if !sending.isEmpty { _ = sending.withCString { send(fd, $0, strlen($0), 0) } }
    return fd
}

/// Whether the peer closes `fd` within `milliseconds` (a read returns end of file; bytes are read past).
func waitForClose(_ fd: Int32, milliseconds: Int) -> Bool {
    var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var byte: UInt8 = 0
    while true {
        let n = recv(fd, &byte, 1, 0)
        if n == 0 { return true }
        if n < 0 { return errno == ECONNRESET }
    }
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
func parseExposition(_ text: String) -> [String: Double] {
    var out: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let cut = line.lastIndex(of: " "), let v = Double(String(line[line.index(after: cut)...])) else {
            Issue.record("not a sample line: \(line)")
            continue
        }
        out[String(line[..<cut])] = v
    }
    return out
}

/// The fields of the newest entry of a stream (redis-cli --raw XREVRANGE ... COUNT n).
func newestEntries(_ server: RedisServer, _ key: String, count: Int) throws -> [[String: String]] {
    let lines = try server.cli(["--raw", "XREVRANGE", key, "+", "-", "COUNT", "\(count)"]).split(separator: "\n").map(String.init)
    var entries: [[String: String]] = []
    var i = 0
    while i < lines.count {
        // An ID line, then field/value pairs until the next ID.
        i += 1
        var e: [String: String] = [:]
        while i + 1 < lines.count, lines[i].range(of: #"^\d+-\d+$"#, options: .regularExpression) == nil {
            e[lines[i]] = lines[i + 1]
            i += 2
        }
        entries.append(e)
    }
    return entries
}

@Suite(.serialized) struct HealthMetrics {
    /// A real `spillway run` with http_listen on a free loopback port: /health 200, /metrics parsed
    /// back (and checked by promtool) and its counters growing, 404 and 405, many requests at once,
    /// the internal records in Redis with their values, status's per-input fields, a SIGHUP moving
    /// the endpoint to another port, 503 once Redis is killed (breaker open), and SIGTERM stopping it.
    @Test func healthAndMetricsOverLoopback() async throws {
        let port = try RedisServer.freePort()
        let server = try RedisServer(port: port)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-obs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir); server.stop(); server.removeFiles() }
        let logFile = dir.appendingPathComponent("app.log")
        try "one\ntwo\nthree\n".write(to: logFile, atomically: true, encoding: .utf8)
        let httpPort = try RedisServer.freePort()
        func config(_ http: Int) -> String {
            outageConfig(dir, port: port).replacingOccurrences(of: "[agent]\n", with: "[agent]\nhttp_listen = \"127.0.0.1:\(http)\"\n")
                + "\n[[inputs.tail]]\nfiles = [\"\(logFile.path)\"]\nfrom_beginning = true\n"
        }
        let (agent, log) = try launchAgent(config(httpPort), in: dir)
        defer { if agent.isRunning { kill(agent.processIdentifier, SIGKILL) } }
        func agentLog() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        // Up: 200.
        var health = await http(httpPort, "/health")
        var deadline = Date().addingTimeInterval(15)
        while health?.status != 200, Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            health = await http(httpPort, "/health")
        }
        #expect(health?.status == 200 && health?.body.hasPrefix("ok: breaker closed") == true, "\(String(describing: health)) \(agentLog())")

        // /metrics: parsed back, counters growing.
        try await Task.sleep(for: .milliseconds(600))
        let first = try #require(await http(httpPort, "/metrics"))
        #expect(first.status == 200)
        let m1 = parseExposition(first.body)
        try await Task.sleep(for: .milliseconds(1000))
        // Before asking: the answer is made at this time or later (however late this task resumes).
        let askedAt = Date().timeIntervalSince1970
        let second = try #require(await http(httpPort, "/metrics"))
        let m2 = parseExposition(second.body)
        let w1 = try #require(m1["spillway_written_total"]), w2 = try #require(m2["spillway_written_total"])
        #expect(w1 > 0 && w2 > w1, "\(w1) then \(w2)")
        #expect((m2["spillway_collected_total"] ?? 0) >= w2)
        #expect(m2["spillway_breaker_state"] == 0 && m2["spillway_dropped_total"] == 0 && m2["spillway_rejected_total"] == 0)
        let memAt = "\(dir.path)/agent.toml:16"
        let memRecords = m2["spillway_gather_records_total{input=\"mem\",at=\"\(memAt)\"}"]
        #expect((memRecords ?? 0) >= 3, "\(m2.keys.sorted())")
        #expect(m2["spillway_gather_errors_total{input=\"mem\",at=\"\(memAt)\"}"] == 0)
        #expect((m2["spillway_gather_last_timestamp_seconds{input=\"mem\",at=\"\(memAt)\"}"] ?? 0) > askedAt - 5)
        #expect(m2["spillway_gather_records_total{input=\"tail\",at=\"\(dir.path)/agent.toml:17\"}"] == 3, "\(second.body)")
        #expect(m2["spillway_tail_lag_bytes{at=\"\(dir.path)/agent.toml:17\",path=\"\(logFile.path)\"}"] == 0, "\(second.body)")
        // Debian's promtool (scripts/promtool: installed, or fetched from the archive by make test).
        let file = dir.appendingPathComponent("metrics.txt")
        try second.body.write(to: file, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "'\(repositoryRoot.path)/scripts/promtool' check metrics < '\(file.path)'"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "promtool: \(said)")

        // Bad requests.
        #expect(await http(httpPort, "/nope")?.status == 404)
        #expect(await http(httpPort, "/health", method: "POST")?.status == 405)
        #expect(await http(httpPort, "/metrics", method: "DELETE")?.status == 405)

        // Many requests at once: each is answered (200, or 503 "busy" past the bound), and the
        // endpoint still works after.
        let statuses = await withTaskGroup(of: Int.self) { group in
            for i in 0..<100 { group.addTask { await http(httpPort, i % 2 == 0 ? "/metrics" : "/health")?.status ?? -1 } }
            var all: [Int] = []
            for await s in group { all.append(s) }
            return all
        }
        #expect(statuses.allSatisfy { $0 == 200 || $0 == 503 } && statuses.filter { $0 == 200 }.count >= 16, "\(statuses)")
        #expect(await http(httpPort, "/health")?.status == 200)

        // 300 connections that send nothing (or half a request): the endpoint still answers, and
        // closes each of them after its idle timeout (10 s).
        let idle = (0..<300).compactMap { i in openConnection(httpPort, sending: i % 3 == 0 ? "GET /heal" : "") }
        #expect(idle.count == 300)
        #expect(await http(httpPort, "/health")?.status == 200)
        let closeBy = Date().addingTimeInterval(20)
        // (Past the deadline each is only looked at: 10 ms.)
        let closed = idle.filter { waitForClose($0, milliseconds: max(10, Int(closeBy.timeIntervalSinceNow * 1000))) }.count
        idle.forEach { _ = close($0) }
        #expect(closed == 300, "\(closed) of 300 idle connections closed by the agent")

        // The internal records in Redis, with their values.
        let agentRecords = try newestEntries(server, "metrics:h:spillway", count: 1)
        let newest = try #require(agentRecords.first)
        #expect(Int(newest["written"] ?? "") ?? 0 > 0 && newest["breaker_state"] == "0" && newest["dropped"] == "0", "\(newest)")
        #expect(Int(newest["collected"] ?? "") ?? 0 > 0 && newest["backlog_records"] == "0" && newest["tag_host"] == "h", "\(newest)")
        let perInput = try newestEntries(server, "metrics:h:spillway_input", count: 9)
        let mem = try #require(perInput.first { $0["tag_input"] == "mem" }, "\(perInput)")
        #expect(mem["tag_at"] == memAt && mem["errors"] == "0" && Int(mem["records"] ?? "") ?? 0 > 0, "\(mem)")
        #expect(Double(mem["gather_seconds"] ?? "") != nil && Int64(mem["last_gather_ns"] ?? "") != nil, "\(mem)")
        let tail = try #require(try newestEntries(server, "metrics:h:spillway_tail", count: 1).first)
        #expect(tail["tag_path"] == logFile.path && tail["lag_bytes"] == "0", "\(tail)")

        // status: per input its last gather, duration and errors (the state is saved at least every 5 s).
        var inputs: [[String: Any]] = []
        deadline = Date().addingTimeInterval(10)
        repeat {
            let status = try spillway(["status", "--config", dir.appendingPathComponent("agent.toml").path, "--json"])
            #expect(status.status == 0, "\(status.stderr)")
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
            inputs = try #require(doc["inputs"] as? [[String: Any]], "\(status.stdout)")
            if inputs.first?["last_gather_at"] is String { break }
            try await Task.sleep(for: .milliseconds(250))
        } while Date() < deadline
        #expect(inputs.map { $0["input"] as? String } == ["mem", "tail", "internal"], "\(inputs)")
        let memStatus = try #require(inputs.first)
        #expect(memStatus["at"] as? String == memAt && memStatus["errors"] as? Int == 0 && (memStatus["records"] as? Int ?? 0) > 0)
        #expect(memStatus["last_gather_at"] is String && (memStatus["duration_seconds"] as? Double ?? -1) >= 0, "\(memStatus)")
        let text = try spillway(["status", "--config", dir.appendingPathComponent("agent.toml").path])
        #expect(text.stdout.contains("inputs (last gather, duration, errors, records)") && text.stdout.contains("  mem\t\(memAt)\tlast "), "\(text.stdout)")

        // SIGHUP with another port: the endpoint moves.
        let otherPort = try RedisServer.freePort()
        try config(otherPort).write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
        kill(agent.processIdentifier, SIGHUP)
        deadline = Date().addingTimeInterval(15)
        health = await http(otherPort, "/health")
        while health?.status != 200, Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            health = await http(otherPort, "/health")
        }
        #expect(health?.status == 200, "\(agentLog())")
        #expect(await http(httpPort, "/health") == nil, "the old address still answers")
        // The counters carried over the reload.
        let after = parseExposition(try #require(await http(otherPort, "/metrics")).body)
        #expect((after["spillway_written_total"] ?? 0) >= w2)

        // Redis killed: the breaker opens, 503 with the reason.
        server.crash()
        deadline = Date().addingTimeInterval(15)
        health = await http(otherPort, "/health")
        while health?.status != 503, Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            health = await http(otherPort, "/health")
        }
        #expect(health?.status == 503 && health?.body.contains("unhealthy: breaker") == true && health?.body.contains("last error") == true,
                "\(String(describing: health))")
        let open = parseExposition(try #require(await http(otherPort, "/metrics")).body)
        #expect((open["spillway_breaker_state"] ?? 0) >= 1, "\(open)")

        // SIGTERM: the agent stops, and the endpoint with it.
        let stopped = stopAgent(agent, log: log)
        #expect(!stopped.contains("cannot serve /health"), "\(stopped)")
        #expect(await http(otherPort, "/health") == nil)
    }
}

/// Entries of the internal input's streams (`[agent] internal`, on by default) for `host` with the
/// default key: tests that match Redis against the written counters add them.
func internalInRedis(_ server: RedisServer, host: String = "h") -> Int {
    ["spillway", "spillway_input", "spillway_tail"].reduce(0) { sum, name in
        sum + (Int(((try? server.cli(["XLEN", "metrics:\(host):\(name)"])) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0)
    }
}
