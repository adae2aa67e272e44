import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A redis-server the test starts on a free loopback port in a temp dir, and stops by its PID.
/// Starting fails loudly (never a silent skip) when the server does not come up within 10 s.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    public let dir: URL
    public let process: Process
    public var unixSocket: String { dir.appendingPathComponent("redis.sock").path }
    public var url: String { "redis://127.0.0.1:\(port)/0" }

    public struct StartError: Error, CustomStringConvertible {
        public var description: String
    }

    /// `stack`: the redis-server 7.4 + RedisTimeSeries of scripts/redis-stack-server instead of
    /// Debian's. `port`: reuse a port (restart on the same one).
    public init(stack: Bool = false, port: Int? = nil, dir: URL? = nil, args: [String] = []) throws {
        self.dir = dir ?? FileManager.default.temporaryDirectory.appendingPathComponent("spillway-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.dir, withIntermediateDirectories: true)
        // A free port can be taken by another test's server between choosing it and binding it:
        // then ours exits and the PING is answered by theirs. A server is ours only when its `dir`
        // is ours; otherwise another port is tried (a fixed `port` is not).
        var attempt = 0
        while true {
            attempt += 1
            let chosen = try port ?? Self.freePort()
            let process = Process()
            if stack {
                process.executableURL = repositoryRoot.appendingPathComponent("scripts/redis-stack-server")
            } else {
                process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
            }
            process.arguments = [
                "--port", String(chosen), "--bind", "127.0.0.1", "--dir", self.dir.path,
                "--save", "", "--appendonly", "no", "--unixsocket", self.dir.appendingPathComponent("redis.sock").path,
                "--unixsocketperm", "700", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", self.dir.appendingPathComponent("redis.log").path,
            ] + args
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(stack ? 60 : 10)
            var ours = false
            while Date() < deadline, process.isRunning {
                if let reply = try? Self.cli(port: chosen, ["CONFIG", "GET", "dir"]) {
                    // NOAUTH: a password is set (by these args); a server of another test has none.
                    if reply.contains(self.dir.lastPathComponent) || reply.contains("NOAUTH") {
                        ours = process.isRunning
                        break
                    }
                }
                usleep(50_000)
            }
            if ours {
                self.port = chosen
                self.process = process
                return
            }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            if port != nil || attempt >= 5 {
                let log = (try? String(contentsOf: self.dir.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
                throw StartError(description: "redis-server did not start on 127.0.0.1:\(chosen): \(log.suffix(2000))")
            }
        }
    }

    /// A port nothing listens on now (bind to port 0, read it, close).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw StartError(description: "no free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs redis-cli against this server and returns its output (raw mode, one value per line).
    @discardableResult
    public func cli(_ args: [String], auth: [String] = []) throws -> String {
        try Self.cli(port: port, args, auth: auth)
    }

    static func cli(port: Int, _ args: [String], auth: [String] = []) throws -> String {
        try runProcess("/usr/bin/redis-cli", ["-h", "127.0.0.1", "-p", String(port), "--no-auth-warning"] + auth + args)
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs the commands of `script` (one per line, arguments separated by spaces) through redis-cli's
    /// standard input; returns what it printed.
    @discardableResult
    public func cli(script: String) throws -> String {
        try runProcess("/usr/bin/redis-cli", ["-h", "127.0.0.1", "-p", String(port)], input: script).output
    }

    /// Stops the server: SIGTERM, then SIGKILL after 5 s.
    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Kills the server with SIGKILL (a crash).
    public func crash() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    public func removeFiles() {
        try? FileManager.default.removeItem(at: dir)
    }

    deinit {
        stop()
    }
}

/// The repository root (this file is Sources/SpillwayTestSupport/RedisServer.swift).
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Certificates made with openssl at test time in `dir`: a CA, a server certificate for localhost
/// and 127.0.0.1 signed by it, an expired one, a client certificate, and a second CA that signed
/// nothing the server holds.
public struct TestCertificates: Sendable {
    public let dir: URL
    public var ca: String { dir.appendingPathComponent("ca.pem").path }
    public var otherCA: String { dir.appendingPathComponent("other-ca.pem").path }
    public var serverCert: String { dir.appendingPathComponent("server.pem").path }
    public var serverKey: String { dir.appendingPathComponent("server.key").path }
    public var expiredCert: String { dir.appendingPathComponent("expired.pem").path }
    public var clientCert: String { dir.appendingPathComponent("client.pem").path }
    public var clientKey: String { dir.appendingPathComponent("client.key").path }

    public struct Failed: Error, CustomStringConvertible {
        public var description: String
    }

    public init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-certs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try Self.openssl(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Spillway Test CA"], in: dir)
        try Self.openssl(["req", "-x509"] + ec + ["-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=Another CA"], in: dir)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(to: dir.appendingPathComponent("san.ext"), atomically: true, encoding: .utf8)
        try Self.openssl(["req"] + ec + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], in: dir)
        try Self.openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                          "-out", "server.pem", "-days", "2", "-extfile", "san.ext"], in: dir)
        try Self.openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                          "-out", "expired.pem", "-days", "-1", "-extfile", "san.ext"], in: dir)
        try Self.openssl(["req"] + ec + ["-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=spillway-client"], in: dir)
        try Self.openssl(["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                          "-out", "client.pem", "-days", "2"], in: dir)
    }

    static func openssl(_ args: [String], in dir: URL) throws {
        let (status, output) = try runProcess("/usr/bin/openssl", args, in: dir)
        guard status == 0 else { throw Failed(description: "openssl \(args.joined(separator: " ")): \(output)") }
    }

    /// redis-server arguments for a TLS port with `cert` (the server certificate by default),
    /// clients' certificates required or not.
    public func serverArgs(tlsPort: Int, cert: String? = nil, authClients: Bool = false) -> [String] {
        ["--tls-port", String(tlsPort), "--tls-cert-file", cert ?? serverCert, "--tls-key-file", serverKey,
         "--tls-ca-cert-file", ca, "--tls-auth-clients", authClients ? "yes" : "no"]
    }

    public func remove() { try? FileManager.default.removeItem(at: dir) }
}
