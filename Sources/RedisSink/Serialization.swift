/// The spill buffer's on-disk form of an encoded batch: exactly what would have been sent, so a
/// replay sends the same bytes (same keys, same stream IDs). Versioned; every number is an unsigned
/// LEB128 varint (most lengths take one byte):
///   u8 version=2, recordCount, rejectedAtEncoding, skippedFields, commandCount,
///   then per command: u8 role (0 record, 1 samples, 2 setup), role data (index | n, n × owner),
///   keyLength, key, argc, argc × length, the argument bytes.
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
        var bound = 21
        for c in commands {
            bound += 16 + c.key.count + 5 * c.command.argc + c.command.bytes.count
            if case .samples(let owners) = c.role { bound += 5 * owners.count }
        }
        if out.count < bound { out.append(contentsOf: repeatElement(0, count: bound - out.count)) }
        return out.withUnsafeMutableBufferPointer { buffer -> Int in
            var w = Writer(base: buffer.baseAddress!)
            w.byte(2)
            w.varint(recordCount)
            w.varint(rejectedAtEncoding)
            w.varint(skippedFields)
            w.varint(commands.count)
            for c in commands {
                switch c.role {
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
                w.varint(c.key.count)
                w.bytes(c.key)
                w.varint(c.command.argc)
                for n in c.command.lengths { w.varint(n) }
                w.bytes(c.command.bytes)
            }
            return w.count
        }
    }

    public init(serialized b: [UInt8]) throws(FormatError) {
        var r = Reader(bytes: b)
        guard try r.u8() == 2 else { throw FormatError(description: "unknown batch format version") }
        let recordCount = Int(try r.u32())
        let rejected = Int(try r.u32())
        let skipped = Int(try r.u32())
        let n = Int(try r.u32())
        var commands: [EncodedCommand] = []
        commands.reserveCapacity(min(n, 1 << 20))
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
            let key = try r.bytes(Int(try r.u32()))
            let argc = Int(try r.u32())
            var lengths: [Int] = []
            lengths.reserveCapacity(min(argc, 1 << 20))
            var total = 0
            for _ in 0..<argc {
                let l = Int(try r.u32())
                lengths.append(l)
                total += l
            }
            let data = try r.bytes(total)
            var command = RedisCommand()
            var offset = 0
            for l in lengths {
                command.append(bytes: data[offset..<(offset + l)])
                offset += l
            }
            commands.append(EncodedCommand(command: command, key: key, role: role))
        }
        guard r.atEnd else { throw FormatError(description: "trailing bytes after the batch") }
        self.init(commands: commands, recordCount: recordCount, rejectedAtEncoding: rejected, skippedFields: skipped)
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

    mutating func bytes(_ b: [UInt8]) {
        b.withUnsafeBufferPointer { b in
            guard let src = b.baseAddress, !b.isEmpty else { return }
            (base + count).update(from: src, count: b.count)
        }
        count += b.count
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

    mutating func bytes(_ n: Int) throws(EncodedBatch.FormatError) -> [UInt8] {
        guard n >= 0, pos + n <= bytes.count else { throw EncodedBatch.FormatError(description: "truncated batch") }
        defer { pos += n }
        return Array(bytes[pos..<(pos + n)])
    }
}
