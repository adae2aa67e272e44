#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a procfs/sysfs file, or one line of it, could not be used: unreadable, too large, or
/// malformed (with the line). Parsers throw it for the whole file (no `cpu` line at all, no
/// MemTotal) and hand back one per line they dropped (the rest of the file is still used).
public struct ProcFSError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var line: Int?
    /// What went wrong, in a few fixed words ("not a counter", "too few columns", "unreadable"):
    /// the same kind of problem in the same file is reported once, then only counted.
    public var kind: String
    public var reason: String

    public init(path: String, line: Int? = nil, kind: String, reason: String) {
        self.path = path
        self.line = line
        self.kind = kind
        self.reason = reason
    }

    public var description: String {
        if let line { return "\(path):\(line): \(reason)" }
        return "\(path): \(reason)"
    }
}

/// The lines a parser left out: the first `kept` of them, and how many there were (a file of
/// millions of bad lines costs a count, not memory).
public struct SkippedLines: Sendable, Equatable {
    public static let kept = 32
    public private(set) var first: [ProcFSError] = []
    public private(set) var count = 0

    public init() {}

    public mutating func append(_ e: ProcFSError) {
        count += 1
        if first.count < Self.kept { first.append(e) }
    }

    /// The standard "cut off" entry for a last line without its newline.
    mutating func cut(_ path: String, line: Int) {
        append(ProcFSError(path: path, line: line, kind: "cut off", reason: "the last line has no newline (the read was cut short)"))
    }
}

/// Reads files below a root (`/proc`, `/sys`, or a fixture tree). Reads are bounded: a file larger
/// than `maxFileBytes` is an error, never an unbounded allocation.
public struct ProcFS: Sendable {
    public let root: String
    public let maxFileBytes: Int

    public init(root: String, maxFileBytes: Int = 16 << 20) {
        self.root = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
        self.maxFileBytes = maxFileBytes
    }

    /// The full path of `relative` (e.g. `stat`, `net/dev`) below the root.
    public func path(_ relative: String) -> String { root + "/" + relative }

    /// The whole file. procfs files report size 0, so this reads until EOF.
    public func read(_ relative: String) throws(ProcFSError) -> [UInt8] {
        let full = path(relative)
        let fd = full.withCString { open($0, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw ProcFSError(path: full, kind: "unreadable", reason: errnoText()) }
        defer { close(fd) }
        // One byte more than allowed tells "exactly at the limit" from "over it".
        let limit = maxFileBytes + 1
        var out = [UInt8](repeating: 0, count: min(8192, limit))
        var used = 0
        while true {
            if used == out.count {
                guard out.count < limit else {
                    throw ProcFSError(path: full, kind: "too large", reason: "larger than \(maxFileBytes) bytes")
                }
                out.append(contentsOf: repeatElement(0, count: min(out.count, limit - out.count)))
            }
            let n = out.withUnsafeMutableBytes { buf in
                Glibc.read(fd, buf.baseAddress! + used, buf.count - used)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw ProcFSError(path: full, kind: "unreadable", reason: errnoText())
            }
            if n == 0 { break }
            used += n
        }
        if used > maxFileBytes { throw ProcFSError(path: full, kind: "too large", reason: "larger than \(maxFileBytes) bytes") }
        out.removeSubrange(used...)
        return out
    }

    /// Whether `relative` exists below the root.
    public func exists(_ relative: String) -> Bool {
        path(relative).withCString { access($0, F_OK) } == 0
    }
}

func errnoText() -> String {
    String(cString: strerror(errno))
}
