import Foundation
import SpillwayTestSupport
import Testing

@Suite(.serialized) struct TLSAgent {
    /// `spillway run` against a TLS redis-server: with a CA that did not sign the server's
    /// certificate nothing is written, the breaker opens and status says why, and the records wait
    /// in the spill buffer; with the right CA (after a restart) they all arrive, once and in order.
    @Test func deliversOnlyToATrustedServerAndLosesNothingMeanwhile() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let tlsPort = try RedisServer.freePort()
        let server = try RedisServer(args: certs.serverArgs(tlsPort: tlsPort))
        defer { server.stop(); server.removeFiles() }
        let url = "rediss://localhost:\(tlsPort)/0"
        let wrong = try AgentProcess(redisPort: server.port, inputs: "[[inputs.mem]]", url: url,
                                     redisExtra: "tls_ca_file = \"\(certs.otherCA)\"")
        try wrong.start()
        let refused = try wrong.waitFor(15) { (value($0, "breaker.state") as? String) == "open" && number($0, "backlog.records") > 5 }
        #expect(value(refused, "breaker.state") as? String == "open", "\(refused)")
        let message = value(refused, "last_error.message") as? String ?? ""
        #expect(message.contains("certificate verify failed"), "\(message)")
        #expect(wrong.stop() == 0)
        #expect(try server.cli(["EXISTS", "metrics:h:mem"]) == "0")

        // The same data_dir, the right CA.
        let config = try String(contentsOf: wrong.config, encoding: .utf8).replacingOccurrences(of: certs.otherCA, with: certs.ca)
        try config.write(to: wrong.config, atomically: true, encoding: .utf8)
        try wrong.start()
        let delivered = try wrong.waitFor(20) { number($0, "backlog.records") == 0 && (value($0, "breaker.state") as? String) == "closed" && number($0, "counters.written") > 5 }
        #expect(number(delivered, "backlog.records") == 0 && value(delivered, "breaker.state") as? String == "closed", "\(delivered)")
        #expect(wrong.stop() == 0)
        let count = try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: false)
        #expect(count > 10)
        #expect(!wrong.logText.contains("no such file"), "\(wrong.logText)")
    }

    /// `check` loads the TLS files as the agent will: a key that is not the certificate's is a
    /// problem (exit 2), and the TLS settings are shown.
    @Test func checkLoadsTheTLSFiles() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let config = certs.dir.appendingPathComponent("agent.toml")
        func check(cert: String, key: String) throws -> (Int32, String) {
            try """
                [outputs.redis]
                url = "rediss://127.0.0.1:6380/0"
                tls_ca_file = "\(certs.ca)"
                tls_cert_file = "\(cert)"
                tls_key_file = "\(key)"
                [[inputs.mem]]
                """.write(to: config, atomically: true, encoding: .utf8)
            let r = try spillway(["check", "--config", config.path])
            return (r.status, r.stdout + r.stderr)
        }
        let (bad, said) = try check(cert: certs.clientCert, key: certs.serverKey)
        #expect(bad == 2 && said.contains("TLS cannot work") && said.contains("client key"), "\(said)")
        // Located at the key's line.
        #expect(said.contains("agent.toml:5: outputs.redis.tls_key_file: TLS cannot work"), "\(said)")
        let (good, shown) = try check(cert: certs.clientCert, key: certs.clientKey)
        #expect(good == 0 && shown.contains("tls: ca_file=\(certs.ca) server_name=(the url's host) cert_file=\(certs.clientCert)"), "\(shown)")
    }

    /// `check` reports the TLS keys' problems, and warns when verification is off.
    @Test func checkWarnsWhenVerificationIsOff() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-tls-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("agent.toml")
        try "[outputs.redis]\nurl = \"rediss://127.0.0.1:6380/0\"\ntls_insecure_skip_verify = true\n[[inputs.mem]]\n"
            .write(to: config, atomically: true, encoding: .utf8)
        let r = try spillway(["check", "--config", config.path])
        #expect(r.status == 0, "\(r)")
        #expect((r.stdout + r.stderr).contains("tls_insecure_skip_verify") && (r.stdout + r.stderr).contains("not checked"), "\(r)")
    }
}
