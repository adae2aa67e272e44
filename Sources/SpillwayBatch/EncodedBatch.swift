import SpillwayCore
import Synchronization
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

/// One command of a batch and what its reply settles: a copy taken out of a batch (for tests, logs and
/// error paths), or a command to put into one.
public struct EncodedCommand: Sendable {
    public enum Role: Sendable, Equatable {
        /// An XADD: the reply settles record `index` of the batch.
        case record(Int)
        /// A TS.MADD: sample j belongs to record `owners[j]`; every sample of those records is here.
        case samples(owners: [Int])
        /// TS.CREATE / TS.CREATERULE for series `key`; "already exists" counts as done.
        case setup
    }

    public var command: RedisCommand
    /// The key the command writes (for logs): one of its arguments.
    public var key: [UInt8]
    public var role: Role

    public init(command: RedisCommand, key: [UInt8], role: Role) {
        self.command = command
        self.key = key
        self.role = role
    }
}

/// Where a command is in a batch's bytes: `byteCount` bytes of RESP from byte `byteStart`, `argc`
/// arguments.
public struct CommandSpan: Sendable, Equatable {
    public var byteStart: Int
    public var byteCount: Int
    public var argc: Int

    public var range: Range<Int> { byteStart..<(byteStart + byteCount) }
}

/// A batch, encoded once, as the RESP that goes on the wire: every record has its key and (for
/// streams) its ID from here on, so a resend is exactly what was sent before. These bytes are what
/// the send stage writes to the socket, what the spill buffer stores and what a replay sends: no
/// command is formatted twice.
///
/// The batch contract: the commands as bytes, what each one's reply settles (its role), per-key
/// record counts (`keyCounts`), the tailed files' checkpoints, and the serialized form. Neither the
/// Redis code nor the SQLite code owns it.
public struct EncodedBatch: Sendable {
    /// Every command's RESP, back to back.
    public var bytes: [UInt8] { storage.bytes }
    private var storage = BatchStorage()

    /// Changes `bytes` in place (copying them first when another batch shares them).
    private mutating func withBytes<R, E: Error>(_ body: (inout [UInt8]) throws(E) -> R) throws(E) -> R {
        if !isKnownUniquelyReferenced(&storage) { storage = BatchStorage(copying: storage.bytes) }
        return try body(&storage.bytes)
    }

    struct Entry: Sendable {
        var span: CommandSpan
        /// Which of the command's arguments is its key, and where its contents are in `bytes`.
        var keyArgument: Int
        var keyStart: Int
        var keyCount: Int
        var role: EncodedCommand.Role
    }

    private(set) var entries: [Entry] = []
    public var recordCount: Int
    /// Records that can never be written (timeseries: no numeric field), already settled as rejected.
    public var rejectedAtEncoding: Int
    /// Fields left out (timeseries: strings and booleans).
    public var skippedFields: Int
    /// Tailed files' checkpoints (the last of each file, in batch order): committed with the batch.
    /// Not serialized: once the batch is in the buffer they are too.
    public var checkpoints: [FileCheckpoint] = []
    /// Records that are tailed lines (a batch with lines is never dropped from the buffer).
    public var lineCount = 0

    public init(recordCount: Int = 0, rejectedAtEncoding: Int = 0, skippedFields: Int = 0) {
        self.recordCount = recordCount
        self.rejectedAtEncoding = rejectedAtEncoding
        self.skippedFields = skippedFields
    }

    /// A batch of these commands; each command's key must be one of its arguments.
    public init(commands: [EncodedCommand], recordCount: Int, rejectedAtEncoding: Int, skippedFields: Int) {
        self.init(recordCount: recordCount, rejectedAtEncoding: rejectedAtEncoding, skippedFields: skippedFields)
        for c in commands {
            guard let k = Self.keyArgument(of: c.command, key: c.key) else {
                preconditionFailure("the key of a \(c.command.name) is not one of its arguments")
            }
            append(c.command, keyArgument: k, role: c.role)
        }
    }

    /// The argument of `command` that is `key`: the first from argument 1 on, else the name.
    static func keyArgument(of command: RedisCommand, key: some Collection<UInt8>) -> Int? {
        var found: Int?
        for (i, r) in RESP.argumentRanges(command.bytes[...], count: command.argc).enumerated()
        where r.count == key.count && command.bytes[r].elementsEqual(key) {
            if i > 0 { return i }
            found = 0
        }
        return found
    }

    // MARK: reading

    public var commandCount: Int { entries.count }
    public func span(_ i: Int) -> CommandSpan { entries[i].span }
    public func role(_ i: Int) -> EncodedCommand.Role { entries[i].role }
    public func keyArgument(_ i: Int) -> Int { entries[i].keyArgument }
    public func isRecord(_ i: Int) -> Bool {
        if case .record = entries[i].role { return true }
        return false
    }

    /// Where command `i`'s arguments' contents are in `bytes`.
    public func argumentRanges(_ i: Int) -> [Range<Int>] {
        let s = entries[i].span
        let b = storage.bytes[s.range]
        // Past the array header `*<argc>\r\n`.
        let first = s.byteStart + RESP.headerLength(s.argc)
        return RESP.argumentRanges(b[first...], count: s.argc)
    }

    /// Command `i`'s arguments `arguments` as written (each framed), and where argument
    /// `contentsOf`'s contents are within those bytes (when it is one of them).
    public func framedArguments(_ i: Int, _ arguments: Range<Int>, contentsOf a: Int) -> (bytes: ArraySlice<UInt8>, contents: Range<Int>?) {
        let ranges = argumentRanges(i)
        let s = entries[i].span
        // An argument's framing starts right after the previous one's contents and CRLF.
        func start(_ k: Int) -> Int { k == 0 ? s.byteStart + RESP.headerLength(s.argc) : ranges[k - 1].upperBound + 2 }
        let from = start(arguments.lowerBound)
        let to = arguments.isEmpty ? from : ranges[arguments.upperBound - 1].upperBound + 2
        let contents = arguments.contains(a) ? (ranges[a].lowerBound - from)..<(ranges[a].upperBound - from) : nil
        return (storage.bytes[from..<to], contents)
    }

    /// Argument `a` of command `i`.
    public func argument(_ i: Int, _ a: Int) -> ArraySlice<UInt8> {
        if a == entries[i].keyArgument { return key(i) }
        return storage.bytes[argumentRanges(i)[a]]
    }

    /// The key command `i` writes.
    public func key(_ i: Int) -> ArraySlice<UInt8> {
        let e = entries[i]
        return storage.bytes[e.keyStart..<(e.keyStart + e.keyCount)]
    }

    /// Command `i`'s name, upper-cased (for logs).
    public func name(_ i: Int) -> String { String(decoding: argument(i, 0), as: UTF8.self).uppercased() }

    /// A copy of command `i`.
    public func command(_ i: Int) -> EncodedCommand {
        let s = entries[i].span
        var c = RedisCommand()
        c.append(framed: storage.bytes[(s.byteStart + RESP.headerLength(s.argc))..<(s.byteStart + s.byteCount)], count: s.argc)
        return EncodedCommand(command: c, key: Array(key(i)), role: entries[i].role)
    }

    /// Copies of every command (tests, logs).
    public var commands: [EncodedCommand] { (0..<entries.count).map(command) }

    /// Records per key: stream keys; a TS.MADD's records count under its first series key. Records
    /// of a batch come in runs of one key: a run is counted, then its key hashed once.
    public var keyCounts: [KeyBytes: Int64] {
        var counts: [KeyBytes: Int64] = [:]
        var run: ArraySlice<UInt8> = []
        var runEntry = 0
        var runLength: Int64 = 0
        for i in 0..<commandCount {
            switch entries[i].role {
            case .record:
                // Compared in place, as bytes (memcmp), with the run's first key.
                if runLength > 0, entries[i].keyCount == entries[runEntry].keyCount,
                   storage.bytes.withUnsafeBufferPointer({ b in
                       memcmp(b.baseAddress! + entries[i].keyStart, b.baseAddress! + entries[runEntry].keyStart, entries[i].keyCount) == 0
                   }) {
                    runLength += 1
                } else {
                    if runLength > 0 { counts[KeyBytes(Array(run)), default: 0] += runLength }
                    run = key(i)
                    runEntry = i
                    runLength = 1
                }
            case .samples(let owners):
                counts[KeyBytes(Array(argument(i, 1))), default: 0] += Int64(Set(owners).count)
            case .setup: break
            }
        }
        if runLength > 0 { counts[KeyBytes(Array(run)), default: 0] += runLength }
        return counts
    }

    // MARK: building

    /// Room for this many more bytes and commands (one growth for a batch of a known size).
    public mutating func reserve(bytes: Int, commands: Int) {
        withBytes { $0.reserveCapacity($0.count + bytes) }
        entries.reserveCapacity(entries.count + commands)
    }

    /// Writes one command in place: `body` writes its arguments (at most `maxBytes` bytes of
    /// contents in at most `maxArguments` arguments), with no check per byte; the array header is
    /// written after them (room for `*NN\r\n` is left first, the arguments moved once when the
    /// count needs another length). Argument `keyArgument` is the command's key.
    public mutating func writeCommand(maxBytes: Int, maxArguments: Int, keyArgument: Int, role: EncodedCommand.Role,
                                      _ body: (inout ArgumentWriter) -> Void) {
        let headerRoom = 5
        let room = headerRoom + maxBytes + ArgumentWriter.overhead(arguments: maxArguments)
        let entry = withBytes { bytes -> Entry in
            let start = bytes.count
            grow(&bytes, by: room)
            let (used, entry) = bytes.withUnsafeMutableBufferPointer { b -> (Int, Entry) in
                let base = b.baseAddress! + start
                var w = ArgumentWriter(bytes: base + headerRoom, room: room - headerRoom, maxArguments: maxArguments, mark: keyArgument)
                body(&w)
                let written = w.finish()
                let argc = w.argumentCount
                precondition(argc > keyArgument, "a command's key is not one of its arguments")
                let h = RESP.headerLength(argc)
                precondition(h + written <= room, "EncodedBatch: more bytes than the room made")
                if h != headerRoom { memmove(base + h, base + headerRoom, written) }
                _ = RESP.writeHeader(base, marker: UInt8(ascii: "*"), argc)
                let shift = h - headerRoom
                return (h + written, Entry(span: CommandSpan(byteStart: start, byteCount: h + written, argc: argc), keyArgument: keyArgument,
                                           keyStart: start + headerRoom + w.marked.lowerBound + shift, keyCount: w.marked.count, role: role))
            }
            bytes.removeLast(room - used)
            return entry
        }
        entries.append(entry)
    }

    /// Appends a whole command.
    public mutating func append(_ command: RedisCommand, keyArgument: Int, role: EncodedCommand.Role) {
        let ranges = RESP.argumentRanges(command.bytes[...], count: command.argc)
        precondition(keyArgument < ranges.count, "a command's key is not one of its arguments")
        let entry = withBytes { bytes -> Entry in
            let start = bytes.count
            RESP.appendHeader(&bytes, marker: UInt8(ascii: "*"), command.argc)
            let argumentsAt = bytes.count
            bytes.append(contentsOf: command.bytes)
            return Entry(span: CommandSpan(byteStart: start, byteCount: bytes.count - start, argc: command.argc), keyArgument: keyArgument,
                         keyStart: argumentsAt + ranges[keyArgument].lowerBound, keyCount: ranges[keyArgument].count, role: role)
        }
        entries.append(entry)
    }

    /// Appends command `i` of `other`, with another role.
    public mutating func append(command i: Int, of other: EncodedBatch, role: EncodedCommand.Role) {
        var e = other.entries[i]
        let entry = withBytes { bytes -> Entry in
            let start = bytes.count
            bytes.append(contentsOf: other.storage.bytes[e.span.range])
            e.keyStart += start - e.span.byteStart
            e.span.byteStart = start
            e.role = role
            return e
        }
        entries.append(entry)
    }

    /// Appends command `i` of `other` with argument `a` replaced by `value` (a new stream ID), with
    /// another role.
    public mutating func append(command i: Int, of other: EncodedBatch, role: EncodedCommand.Role,
                                replacing a: Int, with value: some Collection<UInt8>) {
        var c = RedisCommand()
        for (j, r) in other.argumentRanges(i).enumerated() {
            if j == a { c.append(bytes: value) } else { c.append(bytes: other.storage.bytes[r]) }
        }
        append(c, keyArgument: other.entries[i].keyArgument, role: role)
    }

    /// The most bytes a batch read back may take (a damaged row that refers back to large
    /// arguments again and again must not take all memory).
    public static let maxDecodedBytes = 256 << 20

    /// Appends a command read back from storage: the array header for `argc`, then each argument:
    /// bytes of `payload` framed as a bulk string, or an argument of the previous command (its RESP,
    /// in this batch's bytes). Every piece is one whole argument (framed here, or one the previous
    /// command was built of), so the command is whole RESP by construction and its key is found
    /// where argument `keyArgument` was written. `arguments` gets where its arguments' RESP is
    /// (start, count). Returns false (nothing appended) when the batch would pass `maxBytes`.
    mutating func appendAssembled(pieces: [Piece], payload: [UInt8], keyArgument: Int, role: EncodedCommand.Role,
                                  arguments: inout [Int], maxBytes: Int) -> Bool {
        precondition(keyArgument < pieces.count, "a command's key is not one of its arguments")
        let argc = pieces.count
        var total = RESP.headerLength(argc)
        for p in pieces { total += p.inPayload ? RESP.headerLength(p.count) + p.count + 2 : p.count }
        guard storage.bytes.count + total <= maxBytes else { return false }
        let entry = withBytes { bytes -> Entry in
            let start = bytes.count
            arguments.removeAll(keepingCapacity: true)
            // Written through pointers: a slice of `bytes` appended to it would copy it all first.
            grow(&bytes, by: total)
            let key = bytes.withUnsafeMutableBufferPointer { b -> Range<Int> in
                payload.withUnsafeBufferPointer { source -> Range<Int> in
                    let base = b.baseAddress!
                    var to = start + RESP.writeHeader(base + start, marker: UInt8(ascii: "*"), argc)
                    var key = 0..<0
                    for (a, p) in pieces.enumerated() {
                        arguments.append(to)
                        if p.inPayload {
                            let h = RESP.writeHeader(base + to, marker: UInt8(ascii: "$"), p.count)
                            if p.count > 0 { (base + to + h).update(from: source.baseAddress! + p.start, count: p.count) }
                            base[to + h + p.count] = 13
                            base[to + h + p.count + 1] = 10
                            arguments.append(h + p.count + 2)
                            to += h + p.count + 2
                        } else {
                            (base + to).update(from: base + p.start, count: p.count)
                            arguments.append(p.count)
                            to += p.count
                        }
                        if a == keyArgument {
                            let (header, contents) = RESP.bulkLengths(base + arguments[2 * a])
                            key = (arguments[2 * a] + header)..<(arguments[2 * a] + header + contents)
                        }
                    }
                    return key
                }
            }
            return Entry(span: CommandSpan(byteStart: start, byteCount: total, argc: argc), keyArgument: keyArgument,
                         keyStart: key.lowerBound, keyCount: key.count, role: role)
        }
        entries.append(entry)
        return true
    }

    /// `first`'s commands, then this batch's (records re-indexed after `first`'s).
    public func after(_ first: EncodedBatch) -> EncodedBatch {
        guard first.commandCount > 0 else { return self }
        var out = first
        out.rejectedAtEncoding = first.rejectedAtEncoding + rejectedAtEncoding
        out.skippedFields = first.skippedFields + skippedFields
        let n = first.recordCount
        out.reserve(bytes: storage.bytes.count, commands: commandCount)
        for i in 0..<commandCount {
            let role: EncodedCommand.Role = switch entries[i].role {
            case .record(let r): .record(r + n)
            case .samples(let owners): .samples(owners: owners.map { $0 + n })
            case .setup: .setup
            }
            out.append(command: i, of: self, role: role)
        }
        out.recordCount = n + recordCount
        out.checkpoints = first.checkpoints + checkpoints
        out.lineCount = first.lineCount + lineCount
        return out
    }
}

/// A batch's bytes. Batches are hundreds of KB, above glibc's mmap threshold (pinned so RSS stays
/// flat), so fresh storage per batch would be mapped, faulted in page by page, and unmapped again
/// (with a TLB shootdown on the other core) for every batch. When the last batch holding it is gone,
/// its array goes back to a small pool and the next batch is built in it.
final class BatchStorage: @unchecked Sendable {
    // Written only while uniquely referenced (`EncodedBatch.withBytes` copies it first otherwise),
    // so never while another thread may read it.
    var bytes: [UInt8]

    init() { bytes = BatchPool.shared.take() }
    init(copying bytes: [UInt8]) { self.bytes = bytes }
    deinit { BatchPool.shared.give(bytes) }
}

/// Emptied batch storage for the next batches: at most `limit` entries, each of `minBytes` to
/// `maxBytes` (so at most 16 MiB is kept; a batch of 1,000 cpu records takes about 0.8 MiB).
final class BatchPool: Sendable {
    static let shared = BatchPool()
    static let limit = 4
    static let minBytes = 64 << 10
    static let maxBytes = 4 << 20
    private let free = Mutex<[[UInt8]]>([])

    func take() -> [UInt8] {
        guard var b = free.withLock({ $0.popLast() }) else { return [] }
        b.removeAll(keepingCapacity: true)
        return b
    }

    func give(_ b: [UInt8]) {
        guard b.capacity >= Self.minBytes, b.capacity <= Self.maxBytes else { return }
        free.withLock { if $0.count < Self.limit { $0.append(b) } }
    }

    var count: Int { free.withLock { $0.count } }
}
