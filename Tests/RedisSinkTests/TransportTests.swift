import Foundation
import RedisSink
import SpillwayBatch
import SpillwayCore
import SpillwayTestSupport
import Synchronization
import Testing

/// A redis-server with a TLS port beside its plain one (the plain one is for redis-cli's checks).
final class TLSServer {
    let certs: TestCertificates
    let tlsPort: Int
    let server: RedisServer

    init(certs: TestCertificates, cert: String? = nil, authClients: Bool = false) throws {
        self.certs = certs
        let port = try RedisServer.freePort()
        tlsPort = port
        server = try RedisServer(args: certs.serverArgs(tlsPort: port, cert: cert, authClients: authClients))
    }

    func connection(host: String = "127.0.0.1", _ tls: RedisTLSOptions) throws -> RedisConnection {
        var options = RedisConnectionOptions(endpoint: try RedisEndpoint.parse("rediss://\(host):\(tlsPort)/0"))
        options.tls = tls
        options.connectTimeout = 3_000_000_000
        options.timeout = 3_000_000_000
        return RedisConnection(options: options)
    }

    deinit {
        server.stop()
        server.removeFiles()
    }
}

@Suite(.serialized) struct TLSTransport {
    /// The right CA: commands go through, by IP address and by name, and a large pipeline arrives whole.
    @Test func theRightCADelivers() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let s = try TLSServer(certs: certs)
        let byIP = try s.connection(RedisTLSOptions(caFile: certs.ca))
        #expect(try byIP.command(["PING"]) == .status("PONG"))
        let commands = (0..<5000).map { RedisCommand(["XADD", "tls:s", "\($0 + 1)-0", "f", String(repeating: "v", count: $0 % 300)]) }
        let (replies, error) = byIP.pipeline(commands)
        #expect(error == nil && replies.count == 5000 && replies.allSatisfy { !$0.isError }, "\(String(describing: error))")
        #expect(try s.server.cli(["XLEN", "tls:s"]) == "5000")
        let byName = try s.connection(host: "localhost", RedisTLSOptions(caFile: certs.ca))
        #expect(try byName.command(["XLEN", "tls:s"]) == .integer(5000))
    }

    /// A wrong CA, a wrong server name and an expired certificate: nothing is written, and the
    /// error says why.
    @Test func anUntrustedServerGetsNothing() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let s = try TLSServer(certs: certs)
        func refused(_ c: RedisConnection) -> String {
            let (replies, error) = c.pipeline([RedisCommand(["XADD", "tls:x", "*", "f", "v"])])
            #expect(replies.isEmpty)
            return error.map { "\($0)" } ?? "no error"
        }
        let wrongCA = refused(try s.connection(RedisTLSOptions(caFile: certs.otherCA)))
        // (OpenSSL names it by what it found: the server's chain ends in a CA it does not trust.)
        #expect(wrongCA.contains("certificate verify failed: self-signed certificate in certificate chain")
            || wrongCA.contains("certificate verify failed: unable to get local issuer certificate"), "\(wrongCA)")
        #expect(wrongCA.contains("tls_ca_file, is not the CA that signed the server's certificate"), "\(wrongCA)")
        let wrongName = refused(try s.connection(RedisTLSOptions(caFile: certs.ca, serverName: "redis.example.com")))
        #expect(wrongName.contains("certificate verify failed: hostname mismatch"), "\(wrongName)")
        #expect(wrongName.contains("does not hold \"redis.example.com\": set tls_server_name"), "\(wrongName)")
        let expiredServer = try TLSServer(certs: certs, cert: certs.expiredCert)
        let expired = refused(try expiredServer.connection(RedisTLSOptions(caFile: certs.ca)))
        #expect(expired.contains("certificate verify failed: certificate has expired"), "\(expired)")
        let missing = refused(try s.connection(RedisTLSOptions(caFile: certs.dir.appendingPathComponent("none.pem").path)))
        #expect(missing.contains("cannot load the CA certificates"), "\(missing)")
        #expect(try s.server.cli(["EXISTS", "tls:x"]) == "0")
        #expect(try expiredServer.server.cli(["EXISTS", "tls:x"]) == "0")
        // Skipping verification accepts the wrong CA's server (the config warns about it).
        let insecure = try s.connection(RedisTLSOptions(caFile: certs.otherCA, insecureSkipVerify: true))
        #expect(try insecure.command(["PING"]) == .status("PONG"))
        // A plain connection to the TLS port fails (no hang: within the timeout).
        var plain = RedisConnectionOptions(endpoint: try RedisEndpoint.parse("redis://127.0.0.1:\(s.tlsPort)/0"))
        plain.timeout = 1_000_000_000
        let started = Date()
        let plainError = RedisConnection(options: plain).pipeline([RedisCommand(["PING"])]).error.map { "\($0)" } ?? "no error"
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(plainError.contains("if this port serves TLS, use a rediss:// url") || plainError.contains("no answer within 1s"), "\(plainError)")
        // And TLS to the plain port: the handshake gets no TLS answer, and the error says so.
        var toPlain = RedisConnectionOptions(endpoint: try RedisEndpoint.parse("rediss://127.0.0.1:\(s.server.port)/0"))
        toPlain.tls = RedisTLSOptions(caFile: certs.ca)
        toPlain.connectTimeout = 1_000_000_000
        let tlsError = RedisConnection(options: toPlain).pipeline([RedisCommand(["PING"])]).error.map { "\($0)" } ?? "no error"
        #expect(tlsError.contains("is this port serving TLS? A plain port needs a redis:// url"), "\(tlsError)")
    }

    /// `tls-auth-clients yes`: without a client certificate nothing goes through; with one it does.
    @Test func mutualTLS() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let s = try TLSServer(certs: certs, authClients: true)
        let anonymous = try s.connection(RedisTLSOptions(caFile: certs.ca))
        let refused = anonymous.pipeline([RedisCommand(["SET", "tls:m", "1"])]).error.map { "\($0)" } ?? "no error"
        #expect(refused.contains("the server may want a client certificate: set tls_cert_file and tls_key_file"), "\(refused)")
        #expect(try s.server.cli(["EXISTS", "tls:m"]) == "0")
        let client = try s.connection(RedisTLSOptions(caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey))
        #expect(try client.command(["SET", "tls:m", "1"]) == .status("OK"))
        #expect(try s.server.cli(["GET", "tls:m"]) == "1")
    }
}

/// A fake Redis on a unix socket that answers PING, then writes `replies` in parts cut at `cuts`
/// (`pause` µs between them), whatever it is sent.
final class SplitServer: @unchecked Sendable {
    let path: String
    let listener: Int32
    let thread: Thread

    convenience init(replies: [UInt8], cut: Int) throws {
        try self.init(replies: replies, cuts: [cut], pause: 2000)
    }

    init(replies: [UInt8], cuts: [Int], pause: UInt32) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-split-\(UUID().uuidString).sock").path
        self.path = path
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
            raw[path.utf8.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard ok, listen(fd, 4) == 0 else {
            close(fd)
            throw RedisError.connection("cannot listen on \(path)")
        }
        listener = fd
        thread = Thread {
            let c = accept(fd, nil, nil)
            guard c >= 0 else { return }
            defer { close(c) }
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var buf = [UInt8](repeating: 0, count: 65536)
            // The PING of the connection's setup.
            guard recv(c, &buf, buf.count, 0) > 0 else { return }
            _ = "+PONG\r\n".withCString { send(c, $0, 7, Int32(MSG_NOSIGNAL)) }
            // The commands (read until they stop coming), then the replies in parts.
            guard recv(c, &buf, buf.count, 0) > 0 else { return }
            let bounds = [0] + cuts + [replies.count]
            for k in 0..<(bounds.count - 1) {
                if k > 0 { usleep(pause) }
                replies[bounds[k]..<bounds[k + 1]].withUnsafeBytes { _ = send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            usleep(20_000)
        }
        thread.start()
    }

    deinit {
        close(listener)
        unlink(path)
    }
}

@Suite struct ReplyReader {
    /// Every reply kind, the stream of them cut at every byte offset: the same replies each time.
    @Test func everyReplyKindCutAtEveryOffset() throws {
        let wire = Array(("+OK\r\n-ERR wrong\r\n:42\r\n:-7\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
            + "*3\r\n:1\r\n*2\r\n$1\r\na\r\n-E inner\r\n+s\r\n$6\r\nab\r\ncd\r\n").utf8)
        let expected: [RedisReply] = [
            .status("OK"), .error("ERR wrong"), .integer(42), .integer(-7), .bulk(Array("hello".utf8)), .bulk([]), .null, .null,
            .array([]), .array([.integer(1), .array([.bulk([UInt8(ascii: "a")]), .error("E inner")]), .status("s")]),
            .bulk(Array("ab\r\ncd".utf8)),
        ]
        for cut in 1..<wire.count {
            let server = try SplitServer(replies: wire, cut: cut)
            var options = RedisConnectionOptions(endpoint: try RedisEndpoint.parse("unix://\(server.path)"))
            options.timeout = 3_000_000_000
            let c = RedisConnection(options: options)
            let (replies, error) = c.pipeline(Array(repeating: RedisCommand(["ECHO", "x"]), count: expected.count))
            #expect(error == nil && replies == expected, "cut at \(cut): \(replies) \(String(describing: error))")
        }
    }

    /// A server that trickles replies, each well within the socket's timeout, runs out the
    /// pipeline's: the replies read so far, then a timeout that says so (checked before each read
    /// once a reply came).
    @Test func aPipelineThatTricklesRunsOutOfTime() throws {
        let wire = Array(String(repeating: ":1\r\n", count: 24).utf8)
        let server = try SplitServer(replies: wire, cuts: (1..<24).map { $0 * 4 }, pause: 100_000)
        var options = RedisConnectionOptions(endpoint: try RedisEndpoint.parse("unix://\(server.path)"))
        options.timeout = 800_000_000
        let c = RedisConnection(options: options)
        let (replies, error) = c.pipeline(Array(repeating: RedisCommand(["INCR", "k"]), count: 24))
        #expect(replies.count >= 1 && replies.count < 24 && replies.allSatisfy { $0 == .integer(1) }, "\(replies)")
        #expect("\(String(describing: error))".contains("pipeline of 24 commands took longer than"), "\(String(describing: error))")
    }

    /// Replies read later than the pipeline's time after it was sent (the send stage was busy)
    /// are still taken when the first of them waits in the socket: the deadline counts only
    /// once a reply came, as before.
    @Test func aReplyReadLateIsStillTaken() throws {
        let server = try SplitServer(replies: Array(":1\r\n".utf8), cuts: [], pause: 0)
        var options = RedisConnectionOptions(endpoint: try RedisEndpoint.parse("unix://\(server.path)"))
        options.timeout = 300_000_000
        let c = RedisConnection(options: options)
        let ticket = c.send([RedisCommand(["INCR", "k"])])
        usleep(400_000)
        let (replies, error) = c.receive(ticket, detail: .full)
        #expect(replies == [.integer(1)] && error == nil, "\(replies) \(String(describing: error))")
    }

    /// A reply that is not RESP: a protocol error, the connection dropped, never a crash.
    @Test func garbageIsAProtocolError() throws {
        let server = try SplitServer(replies: Array("?what\r\n".utf8), cut: 3)
        let c = RedisConnection(options: RedisConnectionOptions(endpoint: try RedisEndpoint.parse("unix://\(server.path)")))
        let (replies, error) = c.pipeline([RedisCommand(["PING"])])
        #expect(replies.isEmpty && "\(String(describing: error))".contains("protocol error"), "\(String(describing: error))")
        #expect(!c.isConnected)
    }
}
