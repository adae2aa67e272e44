import Foundation
import SpillwayTestSupport
import Synchronization
import Testing
@testable import SpillwayAgent

/// A raw TCP client on 127.0.0.1 (no HTTP library: the tests send what clients should not).
struct RawClient {
    let fd: Int32

    init?(port: Int) {
        guard let fd = connectLoopback(port: port) else { return nil }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
    }

    /// Sends all of `bytes`; false when the peer closed (or reset) the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// One response: status, headers (lowercased names) and body (Content-Length bytes; none for
    /// HEAD). Nil when the connection closes or times out first.
    func response(head: Bool = false) -> (status: Int, headers: [String: String], body: String)? {
        var data: [UInt8] = []
        var byte: UInt8 = 0
        while !(data.count >= 4 && data.suffix(4) == [13, 10, 13, 10]) {
            guard recv(fd, &byte, 1, 0) == 1, data.count < 100_000 else { return nil }
            data.append(byte)
        }
        let lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? -1
        var headers: [String: String] = [:]
        for line in lines.dropFirst() where line.contains(":") {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces)
        }
        var body: [UInt8] = []
        let length = head ? 0 : Int(headers["content-length"] ?? "0") ?? 0
        while body.count < length {
            guard recv(fd, &byte, 1, 0) == 1 else { return nil }
            body.append(byte)
        }
        return (status, headers, String(decoding: body, as: UTF8.self))
    }

    /// Whether the peer closes within `milliseconds` (bytes are read past).
    func closes(within milliseconds: Int) -> Bool {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    /// Whether the peer has closed, without waiting.
    var isClosedNow: Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }

    func close() { _ = Glibc.close(fd) }
}

/// Counts what the handler saw; can hold requests until released.
final class Seen: Sendable {
    let requests = Mutex<[HTTPServerRequest]>([])
    let held = Atomic<Int>(0)
    let release = Atomic<Bool>(false)
}

@Suite(.serialized) struct HTTPServerBounds {
    func server(maxConnections: Int = 256, maxConcurrent: Int = 16, idle: Int64 = 10_000, requestTimeout: Int64 = 30_000,
                seen: Seen = Seen(), hold: Bool = false, maxBodyBytes: Int = 0) async throws -> HTTPServer {
        try await HTTPServer(host: "127.0.0.1", port: 0, maxConnections: maxConnections, maxConcurrent: maxConcurrent,
                             idleTimeout: .milliseconds(idle), requestTimeout: .milliseconds(requestTimeout), maxBodyBytes: maxBodyBytes,
                             errorResponse: { .text($0, "error: " + $1 + "\n") }) { request in
            seen.requests.withLock { $0.append(request) }
            if hold {
                seen.held.add(1, ordering: .relaxed)
                for _ in 0..<3000 where !seen.release.load(ordering: .relaxed) { usleep(10_000) }
            }
            return .text(200, "path=\(request.path) params=\(request.parameters.map { "\($0.name):\($0.value)" })\n")
        }
    }

    @Test func answersGetAndHeadKeepsAliveAndRefusesOtherMethods() async throws {
        let seen = Seen()
        let s = try await server(seen: seen)
        let port = try #require(s.port)
        let c = try #require(RawClient(port: port))
        c.send("GET /api/v1/query?query=cpu_usage_user%7Bhost%3D%22web-1%22%7D&time=1+2 HTTP/1.1\r\nHost: x\r\n\r\n")
        let r1 = try #require(c.response())
        #expect(r1.status == 200 && r1.body == "path=/api/v1/query params=[\"query:cpu_usage_user{host=\\\"web-1\\\"}\", \"time:1 2\"]\n", "\(r1)")
        // The same connection: keep-alive.
        c.send("HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
        let r2 = try #require(c.response(head: true))
        #expect(r2.status == 200 && r2.headers["content-length"] == "\(Array("path=/x params=[]\n".utf8).count)")
        c.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        let r3 = try #require(c.response())
        #expect(r3.status == 405 && r3.headers["allow"] == "GET, HEAD" && r3.headers["connection"] == "close")
        #expect(c.closes(within: 2000))
        c.close()
        #expect(seen.requests.withLock { $0.map(\.method) } == ["GET", "HEAD"])
        await s.close()
    }

    @Test func aRequestHeadPastTheBoundIsRefusedAndClosed() async throws {
        let s = try await server()
        let port = try #require(s.port)
        // A long header.
        let c = try #require(RawClient(port: port))
        c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + String(repeating: "a", count: HTTPServer.maxHeadBytes + 1) + "\r\n\r\n")
        #expect(c.response()?.status == 400)
        #expect(c.closes(within: 2000))
        c.close()
        // Many short headers, sent for as long as the server reads them: it stops at the bound.
        let d = try #require(RawClient(port: port))
        var sent = 0
        d.send("GET / HTTP/1.1\r\n")
        for i in 0..<100_000 {
            guard d.send("X-\(i): b\r\n") else { break }
            sent += 1
        }
        #expect(sent < 100_000, "the server read 100,000 header lines")
        d.close()
        // A long URL.
        let e = try #require(RawClient(port: port))
        e.send("GET /" + String(repeating: "u", count: HTTPServer.maxHeadBytes + 1) + " HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(e.response()?.status == 400)
        e.close()
        // Still serving.
        let f = try #require(RawClient(port: port))
        f.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(f.response()?.status == 200)
        f.close()
        await s.close()
    }

    @Test func idleConnectionsAreClosedAndNeverLockOthersOut() async throws {
        let s = try await server(maxConnections: 20, idle: 60_000)
        let port = try #require(s.port)
        // 30 connections that send nothing or half a request: past 20 the oldest are closed, and a
        // new client is still answered (closing one more: the oldest 11 are gone, the others not).
        let idle = (0..<30).compactMap { i -> RawClient? in
            let c = RawClient(port: port)
            if i % 3 == 0 { c?.send("GET /hal") }
            return c
        }
        #expect(idle.count == 30)
        let c = try #require(RawClient(port: port))
        c.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.response()?.status == 200)
        c.close()
        try await Task.sleep(for: .milliseconds(200))
        #expect(idle.map(\.isClosedNow) == Array(repeating: true, count: 11) + Array(repeating: false, count: 19))
        idle.forEach { $0.close() }
        await s.close()
        // Connections that send and take nothing are closed after the idle timeout.
        let t = try await server(idle: 300)
        let tport = try #require(t.port)
        let quiet = (0..<5).compactMap { i -> RawClient? in
            let c = RawClient(port: tport)
            if i % 2 == 0 { c?.send("GET /hal") }
            return c
        }
        #expect(quiet.count == 5 && quiet.allSatisfy { $0.closes(within: 5000) })
        quiet.forEach { $0.close() }
        await t.close()
    }

    @Test func aClientThatHalfClosesStillGetsItsAnswer() async throws {
        let s = try await server()
        let port = try #require(s.port)
        let c = try #require(RawClient(port: port))
        c.send("GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        shutdown(c.fd, Int32(SHUT_WR))
        let r = try #require(c.response())
        #expect(r.status == 200 && r.body.hasPrefix("path=/half") && r.headers["connection"] == "close")
        #expect(c.closes(within: 2000))
        c.close()
        await s.close()
    }

    @Test func anAnswerPastTheRequestTimeoutIs503() async throws {
        let seen = Seen()
        let s = try await server(requestTimeout: 300, seen: seen, hold: true)
        let port = try #require(s.port)
        let c = try #require(RawClient(port: port))
        c.send("GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try #require(c.response())
        #expect(r.status == 503 && r.body.contains("timeout"))
        #expect(c.closes(within: 2000))
        c.close()
        seen.release.store(true, ordering: .relaxed)
        await s.close()
    }

    @Test func requestsPastTheConcurrencyBoundGet503() async throws {
        let seen = Seen()
        let s = try await server(maxConcurrent: 2, seen: seen, hold: true)
        let port = try #require(s.port)
        let held = (0..<2).compactMap { _ in RawClient(port: port) }
        for c in held { c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n") }
        for _ in 0..<300 where seen.held.load(ordering: .relaxed) < 2 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(seen.held.load(ordering: .relaxed) == 2)
        let third = try #require(RawClient(port: port))
        third.send("GET /more HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try #require(third.response())
        #expect(r.status == 503 && r.body.contains("busy"))
        seen.release.store(true, ordering: .relaxed)
        for c in held { #expect(c.response()?.status == 200) }
        held.forEach { $0.close() }
        third.close()
        await s.close()
    }

    /// `spillway serve`'s server: POSTed forms are parameters (after the query string's); a body past
    /// the bound is 413 (and the connection closed), another type 415; the answers the server gives
    /// itself are the ones `errorResponse` makes.
    @Test func formsArePostedWithinTheBound() async throws {
        let seen = Seen()
        let s = try await server(seen: seen, maxBodyBytes: 64)
        let port = try #require(s.port)
        let c = try #require(RawClient(port: port))
        let form = "query=sum%28x%29&time=1+2"
        c.send("POST /api/v1/query?a=b HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: \(form.utf8.count)\r\n\r\n\(form)")
        let r1 = try #require(c.response())
        #expect(r1.status == 200 && r1.body == "path=/api/v1/query params=[\"a:b\", \"query:sum(x)\", \"time:1 2\"]\n", "\(r1)")
        c.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc")
        let r2 = try #require(c.response())
        #expect(r2.status == 415 && r2.body.hasPrefix("error: a POST body must be application/x-www-form-urlencoded"), "\(r2)")
        let big = String(repeating: "q", count: 65)
        c.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 65\r\n\r\n\(big)")
        let r3 = try #require(c.response())
        #expect(r3.status == 413 && r3.body == "error: request body larger than 64 bytes\n", "\(r3)")
        #expect(c.closes(within: 2000))
        c.close()
        #expect(seen.requests.withLock { $0.count } == 1)
        await s.close()
    }

    /// A handler still running after its request timed out holds its place: the bound counts it.
    @Test func handlersStillRunningAfterATimeoutCountAgainstTheBound() async throws {
        let seen = Seen()
        let s = try await server(maxConcurrent: 1, requestTimeout: 200, seen: seen, hold: true)
        let port = try #require(s.port)
        let first = try #require(RawClient(port: port))
        first.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(first.response()?.status == 503)
        let second = try #require(RawClient(port: port))
        second.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try #require(second.response())
        #expect(r.status == 503 && r.body == "error: busy: too many requests at once\n", "\(r)")
        seen.release.store(true, ordering: .relaxed)
        // Once it returned, the next is answered.
        var answered = false
        for _ in 0..<100 where !answered {
            try await Task.sleep(for: .milliseconds(20))
            guard let c = RawClient(port: port) else { continue }
            c.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            answered = c.response()?.status == 200
            c.close()
        }
        #expect(answered)
        first.close()
        second.close()
        await s.close()
    }

    @Test func aTakenPortIsAnErrorNotACrash() async throws {
        let s = try await server()
        let port = try #require(s.port)
        await #expect(throws: (any Error).self) {
            _ = try await HTTPServer(host: "127.0.0.1", port: port) { _ in .text(200, "") }
        }
        await s.close()
    }
}
