/// The spill buffer's on-disk form of an encoded batch: exactly what would have been sent, so a
/// replay sends the same bytes (same keys, same stream IDs), and the RESP itself, so nothing is
/// formatted again. Versioned; every number is an unsigned LEB128 varint (most take one byte):
///   u8 version=4, recordCount, rejectedAtEncoding, skippedFields, commandCount,
///   then per command: u8 role (0 record, 1 samples, 2 setup), role data (index | n, n × owner),
///   keyArgument (which argument is the key), byteCount (its RESP's length), prefix and suffix (how
///   many of its first and last bytes are the previous command's first and last bytes), then its
///   other bytes. Commands of a batch mostly share their start (`XADD`, the key, `MAXLEN ~ n`, field
///   names) and their end (tags, often the millisecond): stored once, the batch takes about half the
///   bytes, and the buffer writes (and checksums) half as much. Each command read back is checked:
///   one whole RESP command with its key.
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
            bound += 26
            if case .samples(let owners) = e.role { bound += 5 * owners.count }
        }
        if out.count < bound { out.append(contentsOf: repeatElement(0, count: bound - out.count)) }
        return out.withUnsafeMutableBufferPointer { buffer -> Int in
            bytes.withUnsafeBufferPointer { resp -> Int in
                var w = Writer(base: buffer.baseAddress!)
                w.byte(4)
                w.varint(recordCount)
                w.varint(rejectedAtEncoding)
                w.varint(skippedFields)
                w.varint(entries.count)
                var previous = 0..<0
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
                    let r = e.span.range
                    let base = resp.baseAddress!
                    let limit = min(r.count, previous.count)
                    let prefix = Self.commonPrefix(base + r.lowerBound, base + previous.lowerBound, limit)
                    let suffix = Self.commonSuffix(base + r.upperBound, base + previous.upperBound, limit - prefix)
                    w.varint(e.keyArgument)
                    w.varint(r.count)
                    w.varint(prefix)
                    w.varint(suffix)
                    w.bytes(base, from: r.lowerBound + prefix, count: r.count - prefix - suffix)
                    previous = r
                }
                return w.count
            }
        }
    }

    /// How many of the `n` bytes at `a` and `b` are equal from the start.
    @inline(__always)
    static func commonPrefix(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Int {
        var i = 0
        while i + 8 <= n, UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self) == UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self) {
            i += 8
        }
        while i < n, a[i] == b[i] { i += 1 }
        return i
    }

    /// How many of the `n` bytes before `a` and before `b` are equal from the end.
    @inline(__always)
    static func commonSuffix(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Int {
        var i = 0
        while i + 8 <= n, UnsafeRawPointer(a - i - 8).loadUnaligned(as: UInt64.self) == UnsafeRawPointer(b - i - 8).loadUnaligned(as: UInt64.self) {
            i += 8
        }
        while i < n, (a - i - 1).pointee == (b - i - 1).pointee { i += 1 }
        return i
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
            case 4: try readCommandVersion4(&r, role: role)
            case 3: previous = try readCommandVersion3(&r, role: role, previous: previous)
            default: try readCommandVersion2(&r, role: role)
            }
        }
        guard r.atEnd else { throw FormatError(description: "trailing bytes after the batch") }
    }
}

extension EncodedBatch {
    /// Version 4: keyArgument, byteCount, prefix, suffix, the other bytes.
    private mutating func readCommandVersion4(_ r: inout Reader, role: EncodedCommand.Role) throws(FormatError) {
        let keyArgument = Int(try r.u32())
        let count = Int(try r.u32())
        let prefix = Int(try r.u32())
        let suffix = Int(try r.u32())
        let previous = entries.last?.span.range ?? 0..<0
        guard prefix + suffix <= min(count, previous.count) else { throw FormatError(description: "a command shares more bytes than the previous one has") }
        let middle = try r.slice(count - prefix - suffix)
        guard appendShared(prefix: prefix, middle: middle, suffix: suffix, keyArgument: keyArgument, role: role) else {
            throw FormatError(description: "a command is not one whole RESP command with its key")
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
