import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A reply, as a test reads it.
public indirect enum RESPValue: Sendable, Equatable, CustomStringConvertible {
    case simple(String)
    case error(String)
    case integer(Int64)
    case bulk(String)
    case null
    case array([RESPValue])

    public var string: String? {
        switch self {
        case .simple(let s), .bulk(let s): s
        case .integer(let i): String(i)
        default: nil
        }
    }

    public var array: [RESPValue]? { if case .array(let a) = self { a } else { nil } }
    public var int: Int64? { if case .integer(let i) = self { i } else { string.flatMap { Int64($0) } } }

    public var description: String {
        switch self {
        case .simple(let s): s
        case .error(let s): "(error) \(s)"
        case .integer(let i): "\(i)"
        case .bulk(let s): "\"\(s)\""
        case .null: "(nil)"
        case .array(let a): "[" + a.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// A minimal blocking Redis client for tests (loopback only), written apart from the agent's own
/// (RedisSink): what a test reads back does not go through the code under test.
public final class RESPClient {
    public struct Failure: Error, CustomStringConvertible { public var description: String }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var at = 0

    public init(port: Int) throws {
        guard let fd = connectLoopback(port: port) else { throw Failure(description: "cannot connect to 127.0.0.1:\(port)") }
        self.fd = fd
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// Sends one command and reads its reply.
    @discardableResult
    public func call(_ args: [String]) throws -> RESPValue {
        try send(args)
        return try read()
    }

    /// Sends every command, then reads every reply.
    public func pipeline(_ commands: [[String]]) throws -> [RESPValue] {
        for c in commands { try send(c) }
        return try commands.map { _ in try read() }
    }

    private func send(_ args: [String]) throws {
        var out = Array("*\(args.count)\r\n".utf8)
        for a in args {
            out += Array("$\(a.utf8.count)\r\n".utf8)
            out += Array(a.utf8)
            out += [13, 10]
        }
        var off = 0
        while off < out.count {
            let n = out[off...].withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "write: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    private func fill() throws {
        if at > 0 {
            buffer.removeFirst(at)
            at = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        if n < 0, errno == EINTR { return }
        guard n > 0 else { throw Failure(description: n == 0 ? "connection closed" : "read: \(String(cString: strerror(errno)))") }
        buffer += chunk[0..<n]
    }

    private func line() throws -> String {
        while true {
            if let cr = buffer[at...].firstIndex(of: 13), cr + 1 < buffer.count, buffer[cr + 1] == 10 {
                let s = String(decoding: buffer[at..<cr], as: UTF8.self)
                at = cr + 2
                return s
            }
            try fill()
        }
    }

    private func read() throws -> RESPValue {
        let l = try line()
        guard let kind = l.first else { throw Failure(description: "empty reply line") }
        let rest = String(l.dropFirst())
        switch kind {
        case "+": return .simple(rest)
        case "-": return .error(rest)
        case ":": return .integer(Int64(rest) ?? 0)
        case "$":
            guard let n = Int(rest) else { throw Failure(description: "bad bulk length \(rest)") }
            if n < 0 { return .null }
            while buffer.count - at < n + 2 { try fill() }
            let s = String(decoding: buffer[at..<(at + n)], as: UTF8.self)
            at += n + 2
            return .bulk(s)
        case "*":
            guard let n = Int(rest) else { throw Failure(description: "bad array length \(rest)") }
            if n < 0 { return .null }
            var items: [RESPValue] = []
            for _ in 0..<n { items.append(try read()) }
            return .array(items)
        default:
            throw Failure(description: "unknown reply type \(kind)")
        }
    }
}
