/// The spill buffer's on-disk form of an encoded batch: exactly what would have been sent, so a
/// replay sends the same bytes (same keys, same stream IDs), and the RESP itself, so nothing is
/// formatted again. Versioned; every number is an unsigned LEB128 varint (most take one byte):
///   u8 version=4, recordCount, rejectedAtEncoding, skippedFields, commandCount,
///   then per command: u8 role (0 record, 1 samples, 2 setup), role data (index | n, n × owner),
///   keyArgument (which argument is the key), byteCount (its RESP's length);
///   then every command's RESP, back to back (checked when read: each is one whole command).
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
        for e in entries {
            bound += 16
            if case .samples(let owners) = e.role { bound += 5 * owners.count }
        }
        if out.count < bound { out.append(contentsOf: repeatElement(0, count: bound - out.count)) }
        return out.withUnsafeMutableBufferPointer { buffer -> Int in
            var w = Writer(base: buffer.baseAddress!)
            w.byte(4)
            w.varint(recordCount)
            w.varint(rejectedAtEncoding)
            w.varint(skippedFields)
            w.varint(entries.count)
            for e in entries {
                switch e.role {
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
                w.varint(e.keyArgument)
                w.varint(e.span.byteCount)
            }
            bytes.withUnsafeBufferPointer { w.bytes($0.baseAddress, from: 0, count: $0.count) }
            return w.count
        }
    }

    public init(serialized b: [UInt8]) throws(FormatError) {
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
        var meta: [(role: EncodedCommand.Role, keyArgument: Int, byteCount: Int)] = []
        if version == 4 { meta.reserveCapacity(min(n, b.count / 3)) }
        var previous: RedisCommand?
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
            case 4: meta.append((role, Int(try r.u32()), Int(try r.u32())))
            case 3: previous = try readCommandVersion3(&r, role: role, previous: previous)
            default: try readCommandVersion2(&r, role: role)
            }
        }
        if version == 4 {
            for m in meta {
                let at = try r.skip(m.byteCount)
                guard append(resp: b[at..<(at + m.byteCount)], keyArgument: m.keyArgument, role: m.role) else {
                    throw FormatError(description: "a command is not one whole RESP command with its key")
                }
            }
        }
        guard r.atEnd else { throw FormatError(description: "trailing bytes after the batch") }
    }
}

extension EncodedBatch {
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

private struct Reader {
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

    /// Skips `n` bytes; returns where they start.
    mutating func skip(_ n: Int) throws(EncodedBatch.FormatError) -> Int {
        guard n >= 0, pos + n <= bytes.count else { throw EncodedBatch.FormatError(description: "truncated batch") }
        defer { pos += n }
        return pos
    }

    mutating func slice(_ n: Int) throws(EncodedBatch.FormatError) -> ArraySlice<UInt8> {
        guard n >= 0, pos + n <= bytes.count else { throw EncodedBatch.FormatError(description: "truncated batch") }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }
}
