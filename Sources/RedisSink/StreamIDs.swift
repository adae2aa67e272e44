#if canImport(Glibc)
import Glibc
#endif

/// A Redis key as bytes, hashed in one call (an `[UInt8]` hashes byte by byte, which is slow).
public struct KeyBytes: Hashable, Sendable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public static func == (a: KeyBytes, b: KeyBytes) -> Bool { a.bytes == b.bytes }

    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// A stream entry ID, `ms-seq`.
public struct StreamID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var ms: UInt64
    public var seq: UInt64

    public init(ms: UInt64, seq: UInt64) {
        self.ms = ms
        self.seq = seq
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        self.init(ms: ms, seq: seq)
    }

    public static func < (a: StreamID, b: StreamID) -> Bool { (a.ms, a.seq) < (b.ms, b.seq) }

    public var description: String { "\(ms)-\(seq)" }
}

/// Mints explicit stream IDs: per key, strictly increasing; the record's millisecond, raised to the
/// key's last ID (next sequence number) when the clock or the data goes backwards. The per-key
/// high-water mark is saved to a file before any ID minted from it is sent, so a later run, after a
/// restart or a clock step, never mints an ID at or below one already given.
public struct StreamIDMinter: Sendable {
    private(set) var high: [KeyBytes: StreamID] = [:]
    private var dirty = false
    /// Where the high-water marks are kept (`data_dir/stream-ids`); nil keeps them in memory only.
    public let path: String?

    /// `fsync`: whether each save is flushed to the disk before it counts (power-loss safe), as
    /// `[buffer] synchronous = "full"` asks; without it a save survives a crash of the agent (the
    /// rename is atomic), as the buffer's own commits do under "normal".
    public init(path: String?, fsync: Bool = true) throws(PersistenceError) {
        self.path = path
        self.fsyncSaves = fsync
        if let path { high = try Self.load(path) }
    }

    let fsyncSaves: Bool

    public var keyCount: Int { high.count }

    /// The next ID for `key` at `ms`.
    public mutating func mint(key: [UInt8], ms: UInt64) -> StreamID {
        let id: StreamID
        let k = KeyBytes(key)
        if let last = high[k], ms <= last.ms {
            id = StreamID(ms: last.ms, seq: last.seq + 1)
        } else {
            // 0-0 is not a valid stream ID: a record at the epoch starts at 0-1.
            id = StreamID(ms: ms, seq: ms == 0 ? 1 : 0)
        }
        high[k] = id
        dirty = true
        return id
    }

    /// Raises the mark of `key` to `id` (e.g. the stream's last ID as Redis reports it).
    public mutating func observe(key: [UInt8], id: StreamID) {
        if let last = high[KeyBytes(key)], last >= id { return }
        high[KeyBytes(key)] = id
        dirty = true
    }

    /// The mark of `key`, if any.
    public func last(_ key: [UInt8]) -> StreamID? { high[KeyBytes(key)] }

    public struct PersistenceError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Writes the marks if they changed: to a temp file, fsync (unless `fsync` is off), rename
    /// (atomic), mode 0600.
    public mutating func save() throws(PersistenceError) {
        guard dirty, let path else { return }
        var text: [UInt8] = []
        text.reserveCapacity(high.count * 64)
        for (key, id) in high {
            for b in key.bytes {
                text.append(Self.hex[Int(b >> 4)])
                text.append(Self.hex[Int(b & 0xF)])
            }
            text.append(UInt8(ascii: " "))
            text.append(contentsOf: id.description.utf8)
            text.append(UInt8(ascii: "\n"))
        }
        let tmp = path + ".tmp"
        let fd = tmp.withCString { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw PersistenceError(description: "\(tmp): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < text.count {
            let n = text.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let message = String(cString: strerror(errno))
                close(fd)
                throw PersistenceError(description: "\(tmp): \(message)")
            }
            written += n
        }
        guard !fsyncSaves || fsync(fd) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw PersistenceError(description: "\(tmp): fsync: \(message)")
        }
        close(fd)
        guard tmp.withCString({ t in path.withCString { rename(t, $0) } }) == 0 else {
            throw PersistenceError(description: "\(path): rename: \(String(cString: strerror(errno)))")
        }
        dirty = false
    }

    private static let hex = Array("0123456789abcdef".utf8)

    static func load(_ path: String) throws(PersistenceError) -> [KeyBytes: StreamID] {
        let fd = path.withCString { open($0, O_RDONLY | O_CLOEXEC) }
        if fd < 0 {
            if errno == ENOENT { return [:] }
            throw PersistenceError(description: "\(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw PersistenceError(description: "\(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        var out: [KeyBytes: StreamID] = [:]
        var lineNo = 0
        for line in data.split(separator: UInt8(ascii: "\n")) {
            lineNo += 1
            let parts = line.split(separator: UInt8(ascii: " "))
            guard parts.count == 2, parts[0].count % 2 == 0,
                  let id = StreamID(String(decoding: parts[1], as: UTF8.self)) else {
                throw PersistenceError(description: "\(path):\(lineNo): not \"hexkey ms-seq\"")
            }
            var key: [UInt8] = []
            var i = parts[0].startIndex
            while i < parts[0].endIndex {
                guard let hi = hexValue(parts[0][i]), let lo = hexValue(parts[0][i + 1]) else {
                    throw PersistenceError(description: "\(path):\(lineNo): bad hex key")
                }
                key.append(hi << 4 | lo)
                i += 2
            }
            out[KeyBytes(key)] = id
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}
