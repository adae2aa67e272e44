/// The spill buffer's on-disk form of an encoded batch: exactly what would have been sent, so a
/// replay sends the same bytes (same keys, same stream IDs). Versioned; every number is an unsigned
/// LEB128 varint (most lengths take one byte):
///   u8 version=3, recordCount, rejectedAtEncoding, skippedFields, commandCount,
///   then per command: u8 role (0 record, 1 samples, 2 setup), role data (index | n, n × owner),
///   keyArgument (which argument is the key), argc, then per argument: 0 when it is the same as the
///   previous command's argument at that place (the command name, key, MAXLEN, field names, tags,
///   which records of a batch mostly share: about half of a batch's bytes), else its length + 1 and
///   its bytes.
/// Version 2 (still read): per command role, keyLength, key, argc, argc × length, the bytes.
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
        var bound = 21 + 5 * arguments.argc + arguments.bytes.count
        for e in entries {
            bound += 16
            if case .samples(let owners) = e.role { bound += 5 * owners.count }
        }
        if out.count < bound { out.append(contentsOf: repeatElement(0, count: bound - out.count)) }
        return out.withUnsafeMutableBufferPointer { buffer -> Int in
            arguments.bytes.withUnsafeBufferPointer { bytes -> Int in
                arguments.lengths.withUnsafeBufferPointer { lengths -> Int in
                    var w = Writer(base: buffer.baseAddress!)
                    w.byte(3)
                    w.varint(recordCount)
                    w.varint(rejectedAtEncoding)
                    w.varint(skippedFields)
                    w.varint(entries.count)
                    var previous = CommandSpan(argStart: 0, argc: 0, byteStart: 0, byteCount: 0)
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
                        let s = e.span
                        w.varint(e.keyArgument)
                        w.varint(s.argc)
                        var offset = s.byteStart
                        var previousOffset = previous.byteStart
                        for a in 0..<s.argc {
                            let n = lengths[s.argStart + a]
                            if a < previous.argc, lengths[previous.argStart + a] == n,
                               Self.same(bytes.baseAddress! + offset, bytes.baseAddress! + previousOffset, n) {
                                w.varint(0)
                            } else {
                                w.varint(n + 1)
                                w.bytes(bytes.baseAddress, from: offset, count: n)
                            }
                            offset += n
                            if a < previous.argc { previousOffset += lengths[previous.argStart + a] }
                        }
                        previous = s
                    }
                    return w.count
                }
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

    public init(serialized b: [UInt8]) throws(FormatError) {
        var r = Reader(bytes: b)
        let version = try r.u8()
        guard version == 2 || version == 3 else { throw FormatError(description: "unknown batch format version \(version)") }
        let recordCount = Int(try r.u32())
        let rejected = Int(try r.u32())
        let skipped = Int(try r.u32())
        let n = Int(try r.u32())
        self.init(recordCount: recordCount, rejectedAtEncoding: rejected, skippedFields: skipped)
        // Sized once for the whole batch (what is left of the payload bounds it).
        reserve(bytes: b.count, arguments: 0, commands: min(n, b.count / 4))
        var scratch: [Int] = []
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
            if version == 3 {
                try readCommandVersion3(&r, role: role, scratch: &scratch)
            } else {
                try readCommandVersion2(&r, role: role)
            }
        }
        guard r.atEnd else { throw FormatError(description: "trailing bytes after the batch") }
    }
}

extension EncodedBatch {
    /// keyArgument, argc, then each argument: 0 for the previous command's argument at that place,
    /// else length + 1 and the bytes.
    private mutating func readCommandVersion3(_ r: inout Reader, role: EncodedCommand.Role, scratch: inout [Int]) throws(FormatError) {
        let keyArgument = Int(try r.u32())
        let argc = Int(try r.u32())
        guard keyArgument < argc else { throw FormatError(description: "a command's key is not one of its arguments") }
        let previous = entries.last?.span
        var start = beginCommand()
        try withArguments { (arguments: inout RedisCommand) throws(FormatError) in
            // First the arguments' lengths and where their bytes are: at `source` in the payload,
            // or (a repeated one) at `-source - 1` in this batch's bytes (pairs in `scratch`). Then
            // one copy pass.
            scratch.removeAll(keepingCapacity: true)
            var total = 0
            var previousOffset = previous?.byteStart ?? 0
            for a in 0..<argc {
                let tag = Int(try r.u32())
                let n: Int
                if tag == 0 {
                    guard let previous, a < previous.argc else { throw FormatError(description: "an argument refers to a previous command that has none there") }
                    n = arguments.lengths[previous.argStart + a]
                    scratch.append(n)
                    scratch.append(-previousOffset - 1)
                } else {
                    n = tag - 1
                    scratch.append(n)
                    scratch.append(try r.skip(n))
                }
                arguments.appendLength(n)
                total += n
                if let previous, a < previous.argc { previousOffset += arguments.lengths[previous.argStart + a] }
            }
            r.bytes.withUnsafeBufferPointer { payload in
                arguments.appendBytes(count: total) { base, at in
                    var at = at
                    for a in 0..<argc {
                        let n = scratch[2 * a], source = scratch[2 * a + 1]
                        guard n > 0 else { continue }
                        let from = source >= 0 ? payload.baseAddress! + source : UnsafePointer(base + (-source - 1))
                        (base + at).update(from: from, count: n)
                        at += n
                    }
                }
            }
        }
        start.argc = argc
        endCommand(start, keyArgument: keyArgument, role: role)
    }

    /// keyLength, key, argc, the lengths, the bytes.
    private mutating func readCommandVersion2(_ r: inout Reader, role: EncodedCommand.Role) throws(FormatError) {
        let key = try r.slice(Int(try r.u32()))
        let argc = Int(try r.u32())
        var start = beginCommand()
        var total = 0
        var keyArgument: Int?
        try withArguments { (arguments: inout RedisCommand) throws(FormatError) in
            for _ in 0..<argc {
                let l = Int(try r.u32())
                arguments.appendLength(l)
                total += l
            }
            let data = try r.slice(total)
            arguments.appendBytes(data)
            keyArgument = Self.keyArgument(lengths: arguments.lengths[start.argStart...], bytes: data, key: key)
        }
        guard let keyArgument else { throw FormatError(description: "a command's key is not one of its arguments") }
        start.argc = argc
        endCommand(start, keyArgument: keyArgument, role: role)
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
