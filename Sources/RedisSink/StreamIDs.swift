import SpillwayBatch
import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// One run's stream ID minter, shared by every copy of the encoder (the encode stage mints each
/// record's ID, and the new IDs of records Redis refused, see `PendingBatch.moved`). Every use
/// holds its lock.
public final class SharedStreamIDs: @unchecked Sendable {
    private let lock = ConditionLock()
    private var minter: StreamIDMinter

    public init(_ minter: StreamIDMinter) { self.minter = minter }

    public func withMinter<T>(_ body: (inout StreamIDMinter) -> T) -> T {
        lock.withLock { body(&minter) }
    }

    /// Saves the marks if they changed (see `StreamIDMinter.save`).
    public func save() throws(StreamIDMinter.PersistenceError) {
        lock.lock()
        defer { lock.unlock() }
        try minter.save()
    }

}

/// A stream entry ID, `ms-seq`.
public struct StreamID: Sendable, Hashable, Comparable, CustomStringConvertible, StreamIDText {
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
        if let path { (high, generation) = try Self.load(path) }
    }

    let fsyncSaves: Bool

    public var keyCount: Int { high.count }

    /// The next ID for `key` at `ms`.
    public mutating func mint(key: [UInt8], ms: UInt64) -> StreamID {
        dirty = true
        // One hash lookup: the mark is read and raised in place. A key without a mark reads as
        // 0-0, below every valid ID, so a record at the epoch starts at 0-1.
        return Self.advance(&high[KeyBytes(key), default: StreamID(ms: 0, seq: 0)], to: ms)
    }

    /// The ID after `last` for a record at `ms` (as `mint` gives), for a caller that keeps a key's
    /// mark itself through a run of its records and hands it back with `setMark`.
    public static func next(after last: StreamID, ms: UInt64) -> StreamID {
        var l = last
        return advance(&l, to: ms)
    }

    /// Sets the mark of `key` to `id`, an ID `next(after:ms:)` gave from its mark.
    public mutating func setMark(key: [UInt8], id: StreamID) {
        high[KeyBytes(key)] = id
        dirty = true
    }

    private static func advance(_ last: inout StreamID, to ms: UInt64) -> StreamID {
        last = ms <= last.ms ? StreamID(ms: last.ms, seq: last.seq + 1) : StreamID(ms: ms, seq: 0)
        return last
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

    /// The generation of the last copy written (or found at start).
    private var generation: UInt64 = 0

    /// Writes the marks if they changed. Two copies take turns, `stream-ids` (odd generations) and
    /// `stream-ids.alt` (even),
    /// each rewritten in place (no temp file, no rename: a rename makes ext4 flush the file at once,
    /// which cost more than the rest of a batch's encoding) under a header with a generation number,
    /// the body's length and its FNV-1a: a copy cut short by a crash fails the check and the other,
    /// one generation older but complete, is used. Fsynced when `fsync` is on. Mode 0600.
    public mutating func save() throws(PersistenceError) {
        guard dirty, let path else { return }
        var body: [UInt8] = []
        body.reserveCapacity(high.count * 64)
        for (key, id) in high {
            for b in key.bytes {
                body.append(Self.hex[Int(b >> 4)])
                body.append(Self.hex[Int(b & 0xF)])
            }
            body.append(UInt8(ascii: " "))
            body.append(contentsOf: id.description.utf8)
            body.append(UInt8(ascii: "\n"))
        }
        let next = generation + 1
        var text = Self.magic
        text.append(contentsOf: "\(next) \(body.count) \(String(FileCheckpoint.fingerprint(of: body), radix: 16))\n".utf8)
        text.append(contentsOf: body)
        let target = next % 2 == 1 ? path : path + ".alt"
        let fd = target.withCString { open($0, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw PersistenceError(description: "\(target): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var written = 0
        while written < text.count {
            let n = text.withUnsafeBytes { pwrite(fd, $0.baseAddress! + written, $0.count - written, off_t(written)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw PersistenceError(description: "\(target): \(String(cString: strerror(errno)))")
            }
            written += n
        }
        guard ftruncate(fd, off_t(text.count)) == 0 else {
            throw PersistenceError(description: "\(target): truncate: \(String(cString: strerror(errno)))")
        }
        guard !fsyncSaves || fsync(fd) == 0 else {
            throw PersistenceError(description: "\(target): fsync: \(String(cString: strerror(errno)))")
        }
        generation = next
        dirty = false
    }

    private static let hex = Array("0123456789abcdef".utf8)
    private static let magic = Array("spillway-stream-ids 2 ".utf8)

    /// Reads both copies and keeps the newest complete one. A `stream-ids` without the header is the
    /// earlier single-file format (written by rename, so complete). Throws when a file exists but no
    /// copy can be used.
    static func load(_ path: String) throws(PersistenceError) -> (marks: [KeyBytes: StreamID], generation: UInt64) {
        var best: (marks: [KeyBytes: StreamID], generation: UInt64)?
        var damaged: PersistenceError?
        for file in [path, path + ".alt"] {
            guard let data = try readFile(file) else { continue }
            do throws(PersistenceError) {
                let marks: [KeyBytes: StreamID], generation: UInt64
                if data.starts(with: magic) {
                    guard let copy = validCopy(data) else {
                        throw PersistenceError(description: "\(file): the stream ID marks are damaged (length or checksum)")
                    }
                    (marks, generation) = (try parse(copy.body, file: file), copy.generation)
                } else {
                    // The earlier format: one complete file, `stream-ids`. Counted as generation 1,
                    // so the next save goes to the other copy and this one stays until then.
                    (marks, generation) = (try parse(data[...], file: file), 1)
                }
                if best == nil || generation > best!.generation { best = (marks, generation) }
            } catch {
                damaged = damaged ?? error
            }
        }
        if let best { return best }
        if let damaged { throw damaged }
        return ([:], 0)
    }

    /// The generation and body of a copy whose header, length and checksum agree.
    static func validCopy(_ data: [UInt8]) -> (generation: UInt64, body: ArraySlice<UInt8>)? {
        guard let newline = data.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let fields = data[magic.count..<newline].split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
        guard fields.count == 3, let generation = UInt64(fields[0]), let length = Int(fields[1]),
              let sum = UInt64(fields[2], radix: 16), length <= data.count - newline - 1 else { return nil }
        let body = data[(newline + 1)..<(newline + 1 + length)]
        guard FileCheckpoint.fingerprint(of: body) == sum else { return nil }
        return (generation, body)
    }

    /// The file's bytes, or nil when it does not exist.
    static func readFile(_ path: String) throws(PersistenceError) -> [UInt8]? {
        let fd = path.withCString { open($0, O_RDONLY | O_CLOEXEC) }
        if fd < 0 {
            if errno == ENOENT { return nil }
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
        return data
    }

    /// "hexkey ms-seq" lines.
    static func parse(_ data: ArraySlice<UInt8>, file path: String) throws(PersistenceError) -> [KeyBytes: StreamID] {
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

extension EncodedBatch {
    /// Which argument of an XADD is its entry ID (after `MAXLEN ~ n` or `MINID ~ id` when present);
    /// nil for other commands.
    func streamIDArgument(_ i: Int) -> Int? {
        let argc = span(i).argc
        guard argc >= 3, argument(i, 0).elementsEqual("XADD".utf8) else { return nil }
        let third = argument(i, 2)
        let trimmed = third.elementsEqual("MAXLEN".utf8) || third.elementsEqual("MINID".utf8)
        let at = trimmed ? 5 : 2
        return at < argc ? at : nil
    }

    /// `moved` (XADDs Redis refused, see `PendingBatch.moved`) as one batch, each XADD with a new ID
    /// from `minter` (so, minted before the records encoded after it, it goes ahead of them). Returns
    /// it and how many commands got a new ID. Its records are pinned as lines (never dropped).
    public static func reminting(_ moved: [EncodedBatch], minter: inout StreamIDMinter) -> (batch: EncodedBatch, reminted: Int) {
        var out = EncodedBatch()
        var n = 0
        var reminted = 0
        for m in moved {
            for i in 0..<m.commandCount {
                defer { n += 1 }
                guard let at = m.streamIDArgument(i), let old = StreamID(String(decoding: m.argument(i, at), as: UTF8.self)) else {
                    out.append(command: i, of: m, role: .record(n))
                    continue
                }
                let id = minter.mint(key: Array(m.argument(i, 1)), ms: old.ms)
                out.append(command: i, of: m, role: .record(n), replacing: at, with: Array(id.description.utf8))
                reminted += 1
            }
        }
        out.recordCount = n
        out.lineCount = n
        return (out, reminted)
    }
}
