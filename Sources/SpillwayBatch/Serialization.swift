/// The spill buffer's on-disk form of an encoded batch: exactly what would have been sent, so a
/// replay sends the same bytes (same keys, same stream IDs), kept as RESP, so nothing is formatted
/// again. Versioned; every number is an unsigned LEB128 varint (most take one byte):
///   u8 version=4, recordCount, rejectedAtEncoding, skippedFields, commandCount,
///   then per command: u8 role (0 record, 1 samples, 2 setup), role data (index | n, n × owner),
///   keyArgument (which argument is the key), argc, then per argument: 0 when it is the same as the
///   previous command's argument at that place (the command name, key, `MAXLEN ~ n`, field names,
///   tags, which records of a batch mostly share: more than half of a batch's bytes), else its
///   length + 1 and its bytes.
/// A command read back is its RESP again: the array header, each argument's RESP copied from the
/// previous command or framed around the bytes read (`$<length>\r\n<bytes>\r\n`), so it is whole
/// RESP by construction; checked: its key is one of its arguments, its role names records of the
/// batch.
/// Versions 2 and 3 (argument lists, still read) are turned into RESP when read.
extension EncodedBatch {
    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        let n = serialize(into: &out)
        out.removeLast(out.count - n)
        return out
    }

    /// The same, written at the start of `out`, which is grown when needed and never shrunk (a
    /// caller that keeps it allocates and clears nothing per batch); returns the length written.
    @discardableResult
    public func serialize(into out: inout [UInt8]) -> Int {
        // The most it can take (every number at 5 bytes), so it is written through a pointer with
        // no check per byte.
        var bound = 21 + bytes.count
        var maxArgc = 0
        for e in entries {
            bound += 16 + 5 * e.span.argc
            maxArgc = max(maxArgc, e.span.argc)
            if case .samples(let owners) = e.role { bound += 5 * owners.count }
        }
        if out.count < bound { out.append(contentsOf: repeatElement(0, count: bound - out.count)) }
        // Where the previous command's arguments are (RESP included), and this one's: (start,
        // length) pairs, in two buffers that swap (no array bookkeeping per argument).
        var previous = UnsafeMutableBufferPointer<Int>.allocate(capacity: 2 * maxArgc + 2)
        var current = UnsafeMutableBufferPointer<Int>.allocate(capacity: 2 * maxArgc + 2)
        defer {
            previous.deallocate()
            current.deallocate()
        }
        var previousArgc = 0
        return out.withUnsafeMutableBufferPointer { buffer -> Int in
            bytes.withUnsafeBufferPointer { resp -> Int in
                var w = Writer(base: buffer.baseAddress!)
                w.byte(4)
                w.varint(recordCount)
                w.varint(rejectedAtEncoding)
                w.varint(skippedFields)
                w.varint(entries.count)
                let base = resp.baseAddress!
                entries.withUnsafeBufferPointer { entries in
                    for k in entries.indices {
                        switch entries[k].role {
                        case .record(let i):
                            w.byte(0)
                            w.varint(i)
                        case .samples(let owners):
                            w.byte(1)
                            w.varint(owners.count)
                            for o in owners { w.varint(o) }
                        case .setup:
                            w.byte(2)
                        }
                        let span = entries[k].span
                        w.varint(entries[k].keyArgument)
                        w.varint(span.argc)
                        var at = span.byteStart + RESP.headerLength(span.argc)
                        for a in 0..<span.argc {
                            let (header, contents) = RESP.bulkLengths(base + at)
                            let n = header + contents + 2
                            current[2 * a] = at
                            current[2 * a + 1] = n
                            if a < previousArgc, previous[2 * a + 1] == n, Self.same(base + at, base + previous[2 * a], n) {
                                w.varint(0)
                            } else {
                                w.varint(contents + 1)
                                w.bytes(base, from: at + header, count: contents)
                            }
                            at += n
                        }
                        swap(&previous, &current)
                        previousArgc = span.argc
                    }
                }
                return w.count
            }
        }
    }

    /// Whether `n` bytes at `a` and `b` are equal (inline: arguments are short, a call costs more).
    @inline(__always)
    static func same(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        var i = 0
        while i + 8 <= n {
            if UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self) != UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self) { return false }
            i += 8
        }
        while i < n {
            if a[i] != b[i] { return false }
            i += 1
        }
        return true
    }

    /// Reads a batch back; one that would take more than `maxDecodedBytes` is an error.
    public init(serialized b: [UInt8], maxDecodedBytes: Int = EncodedBatch.maxDecodedBytes) throws(FormatError) {
        var r = Reader(bytes: b)
        let version = try r.u8()
        guard (2...4).contains(version) else { throw FormatError(description: "unknown batch format version \(version)") }
        let recordCount = Int(try r.u32())
        let rejected = Int(try r.u32())
        let skipped = Int(try r.u32())
        let n = Int(try r.u32())
        self.init(recordCount: recordCount, rejectedAtEncoding: rejected, skippedFields: skipped)
        // Sized once for the whole batch (what is left of the payload bounds it).
        reserve(bytes: b.count, commands: min(n, b.count / 4))
        var previous: RedisCommand?
        var previousArguments: [Int] = [], currentArguments: [Int] = []
        for _ in 0..<n {
            let role: EncodedCommand.Role
            switch try r.u8() {
            case 0: role = .record(Int(try r.u32()))
            case 1:
                let count = Int(try r.u32())
                var owners: [Int] = []
                owners.reserveCapacity(min(count, 1 << 20))
                for _ in 0..<count { owners.append(Int(try r.u32())) }
                role = .samples(owners: owners)
            case 2: role = .setup
            default: throw FormatError(description: "unknown command role")
            }
            switch version {
            case 4:
                try readCommandVersion4(&r, role: role, previous: previousArguments, current: &currentArguments, maxBytes: maxDecodedBytes)
                swap(&previousArguments, &currentArguments)
            case 3: previous = try readCommandVersion3(&r, role: role, previous: previous)
            default: try readCommandVersion2(&r, role: role)
            }
        }
        guard r.atEnd else { throw FormatError(description: "trailing bytes after the batch") }
        try checkRoles()
    }

    /// Every role names records of the batch, and a TS.MADD has the arguments its samples need
    /// (a damaged row that reads as a batch must not be taken for one).
    private func checkRoles() throws(FormatError) {
        for i in 0..<commandCount {
            switch role(i) {
            case .record(let r):
                guard r >= 0, r < recordCount else { throw FormatError(description: "a command settles a record the batch does not have") }
            case .samples(let owners):
                guard owners.allSatisfy({ $0 >= 0 && $0 < recordCount }) else { throw FormatError(description: "a sample belongs to a record the batch does not have") }
                guard span(i).argc >= 1 + 3 * owners.count else { throw FormatError(description: "a TS.MADD has fewer samples than its owners") }
            case .setup:
                break
            }
        }
    }
}

/// Where an argument read back comes from: the payload, or this batch's bytes (start, count).
struct Piece {
    var start: Int
    var count: Int
    var inPayload: Bool
}

extension EncodedBatch {
    /// Version 4: keyArgument, argc, then each argument: 0 for the previous command's argument at
    /// that place, else its length + 1 and its bytes. `previous` and `current`: where the
    /// previous command's arguments are in `bytes` (start, count), and this one's once read.
    private mutating func readCommandVersion4(_ r: inout Reader, role: EncodedCommand.Role, previous: [Int], current: inout [Int],
                                              maxBytes: Int) throws(FormatError) {
        let keyArgument = Int(try r.u32())
        let argc = Int(try r.u32())
        // Every argument takes at least a byte of the payload.
        guard keyArgument < argc, argc <= r.bytes.count - r.pos else { throw FormatError(description: "a command's key is not one of its arguments") }
        var pieces: [Piece] = []
        pieces.reserveCapacity(argc)
        for a in 0..<argc {
            let tag = Int(try r.u32())
            if tag == 0 {
                guard 2 * a + 1 < previous.count else { throw FormatError(description: "an argument refers to a previous command that has none there") }
                pieces.append(Piece(start: previous[2 * a], count: previous[2 * a + 1], inPayload: false))
            } else {
                let at = r.pos
                _ = try r.slice(tag - 1)
                pieces.append(Piece(start: at, count: tag - 1, inPayload: true))
            }
        }
        guard appendAssembled(pieces: pieces, payload: r.bytes, keyArgument: keyArgument, role: role, arguments: &current, maxBytes: maxBytes) else {
            throw FormatError(description: "the batch would take more than \(maxBytes) bytes")
        }
    }

    /// Version 3: keyArgument, argc, then each argument: 0 for the previous command's argument at
    /// that place, else length + 1 and the bytes. Returns the command (the next one's previous).
    private mutating func readCommandVersion3(_ r: inout Reader, role: EncodedCommand.Role, previous: RedisCommand?) throws(FormatError) -> RedisCommand {
        let keyArgument = Int(try r.u32())
        let argc = Int(try r.u32())
        guard keyArgument < argc else { throw FormatError(description: "a command's key is not one of its arguments") }
        let previousArguments = previous.map { p in RESP.argumentRanges(p.bytes[...], count: p.argc).map { p.bytes[$0] } } ?? []
        var c = RedisCommand()
        for a in 0..<argc {
            let tag = Int(try r.u32())
            if tag == 0 {
                guard a < previousArguments.count else { throw FormatError(description: "an argument refers to a previous command that has none there") }
                c.append(bytes: previousArguments[a])
            } else {
                c.append(bytes: try r.slice(tag - 1))
            }
        }
        append(c, keyArgument: keyArgument, role: role)
        return c
    }

    /// Version 2: keyLength, key, argc, the lengths, the bytes.
    private mutating func readCommandVersion2(_ r: inout Reader, role: EncodedCommand.Role) throws(FormatError) {
        let key = try r.slice(Int(try r.u32()))
        let argc = Int(try r.u32())
        var lengths: [Int] = []
        for _ in 0..<argc { lengths.append(Int(try r.u32())) }
        var c = RedisCommand()
        for l in lengths { c.append(bytes: try r.slice(l)) }
        guard let keyArgument = Self.keyArgument(of: c, key: key) else { throw FormatError(description: "a command's key is not one of its arguments") }
        append(c, keyArgument: keyArgument, role: role)
    }
}

/// Writes into memory the caller sized for it (see `serialize(into:)`).
private struct Writer {
    let base: UnsafeMutablePointer<UInt8>
    var count = 0

    mutating func byte(_ b: UInt8) {
        base[count] = b
        count += 1
    }

    /// An unsigned LEB128 number (at most 5 bytes: every count here fits in 32 bits).
    mutating func varint(_ n: Int) {
        var v = UInt32(truncatingIfNeeded: n)
        while v >= 0x80 {
            base[count] = UInt8(truncatingIfNeeded: v) | 0x80
            count += 1
            v >>= 7
        }
        base[count] = UInt8(v)
        count += 1
    }

    mutating func bytes(_ source: UnsafePointer<UInt8>?, from offset: Int, count n: Int) {
        if let source, n > 0 { (base + count).update(from: source + offset, count: n) }
        count += n
    }
}

struct Reader {
    let bytes: [UInt8]
    var pos = 0
    var atEnd: Bool { pos == bytes.count }

    mutating func u8() throws(EncodedBatch.FormatError) -> UInt8 {
        guard pos < bytes.count else { throw EncodedBatch.FormatError(description: "truncated batch") }
        defer { pos += 1 }
        return bytes[pos]
    }

    mutating func u32() throws(EncodedBatch.FormatError) -> UInt32 {
        var v: UInt32 = 0
        var shift: UInt32 = 0
        while true {
            guard pos < bytes.count else { throw EncodedBatch.FormatError(description: "truncated batch") }
            let b = bytes[pos]
            pos += 1
            guard shift < 32, shift < 28 || b < 0x10 else { throw EncodedBatch.FormatError(description: "number too large in batch") }
            v |= UInt32(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
        }
    }

    mutating func slice(_ n: Int) throws(EncodedBatch.FormatError) -> ArraySlice<UInt8> {
        guard n >= 0, pos + n <= bytes.count else { throw EncodedBatch.FormatError(description: "truncated batch") }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }
}
