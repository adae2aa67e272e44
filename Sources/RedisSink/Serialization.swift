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
        serialize(into: &out)
        return out
    }

    /// The same, into `out` (emptied first; its storage is reused, so a caller that keeps it
    /// allocates nothing per batch).
    public func serialize(into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        out.reserveCapacity(64 + commands.reduce(0) { $0 + $1.command.bytes.count + 4 * $1.command.argc + $1.key.count + 16 })
        out.append(2)
        put(UInt32(recordCount), &out)
        put(UInt32(rejectedAtEncoding), &out)
        put(UInt32(skippedFields), &out)
        put(UInt32(commands.count), &out)
        for c in commands {
            switch c.role {
            case .record(let i):
                out.append(0)
                put(UInt32(i), &out)
            case .samples(let owners):
                out.append(1)
                put(UInt32(owners.count), &out)
                for o in owners { put(UInt32(o), &out) }
            case .setup:
                out.append(2)
            }
            put(UInt32(c.key.count), &out)
            out.append(contentsOf: c.key)
            put(UInt32(c.command.argc), &out)
            for n in c.command.lengths { put(UInt32(n), &out) }
            out.append(contentsOf: c.command.bytes)
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

private func put(_ v: UInt32, _ out: inout [UInt8]) {
    var v = v
    while v >= 0x80 {
        out.append(UInt8(truncatingIfNeeded: v) | 0x80)
        v >>= 7
    }
    out.append(UInt8(v))
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
