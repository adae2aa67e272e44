import SpillwayCore

/// One Redis command as its arguments, stored flat: every argument's bytes back to back, and their
/// lengths. Binary-safe; one allocation per command instead of one per argument.
public struct RedisCommand: Sendable, Hashable {
    public private(set) var bytes: [UInt8] = []
    public private(set) var lengths: [Int] = []

    public init() {}

    public init(_ args: [String]) {
        for a in args { append(a) }
    }

    public var argc: Int { lengths.count }

    public mutating func reserve(bytes: Int, arguments: Int) {
        self.bytes.reserveCapacity(bytes)
        lengths.reserveCapacity(arguments)
    }

    /// Empties it, keeping its storage.
    public mutating func removeAll(keepingCapacity: Bool = true) {
        bytes.removeAll(keepingCapacity: keepingCapacity)
        lengths.removeAll(keepingCapacity: keepingCapacity)
    }

    /// Raw parts, for a reader that appends an argument's length and its bytes separately.
    mutating func appendLength(_ n: Int) { lengths.append(n) }
    mutating func appendBytes(_ b: ArraySlice<UInt8>) { bytes.append(contentsOf: b) }
    /// Appends `count` bytes that `fill` writes: it gets the bytes' storage (where earlier
    /// arguments can be copied from) and the offset to write at.
    mutating func appendBytes(count: Int, fill: (UnsafeMutablePointer<UInt8>, Int) -> Void) {
        let at = bytes.count
        Self.grow(&bytes, by: count)
        bytes.withUnsafeMutableBufferPointer { b in
            if let base = b.baseAddress { fill(base, at) }
        }
    }

    /// All of its arguments, as a span (to append it whole to a flat batch).
    public var span: CommandSpan { CommandSpan(argStart: 0, argc: argc, byteStart: 0, byteCount: bytes.count) }

    /// Appends the arguments `span` of `other` (a command of a flat batch).
    public mutating func append(arguments other: RedisCommand, _ span: CommandSpan) {
        bytes.append(contentsOf: other.bytes[span.byteStart..<(span.byteStart + span.byteCount)])
        lengths.append(contentsOf: other.lengths[span.argStart..<(span.argStart + span.argc)])
    }

    public mutating func append(_ s: String) {
        write(maxBytes: s.utf8.count, maxArguments: 1) { $0.argument(s) }
    }

    public mutating func append(_ s: StaticString) {
        s.withUTF8Buffer { append(bytes: $0) }
    }

    public mutating func append(bytes b: some Collection<UInt8>) {
        bytes.append(contentsOf: b)
        lengths.append(b.count)
    }

    public mutating func append(_ v: Int64) {
        small { $0.argument(v) }
    }

    /// A field value as text: integers and integral floats as digits written in place (no String),
    /// other floats in their shortest round-tripping form.
    public mutating func append(_ value: FieldValue) {
        if case .string(let s) = value {
            append(s)
        } else {
            small { $0.argument(value) }
        }
    }

    /// A float as text, as `LineProtocol.formatDouble` writes it (see `ArgumentWriter.argument(double:)`).
    public mutating func append(double d: Double) {
        small { $0.argument(double: d) }
    }

    /// A stream ID, `ms-seq`, written in place.
    public mutating func append(_ id: StreamID) {
        small { $0.argument(id) }
    }

    /// One argument of at most 2 × `maxNumberBytes` + 1 bytes (a number, an ID), written on the stack
    /// and appended with one copy.
    private mutating func small(_ body: (inout ArgumentWriter) -> Void) {
        let room = 2 * ArgumentWriter.maxNumberBytes + 1
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: room) { b in
            var length = 0
            withUnsafeMutablePointer(to: &length) { l in
                var w = ArgumentWriter(bytes: b.baseAddress!, lengths: l, maxBytes: room, maxArguments: 1)
                body(&w)
            }
            bytes.append(contentsOf: UnsafeBufferPointer(start: b.baseAddress!, count: length))
            lengths.append(length)
        }
    }

    /// Appends arguments written through pointers, with no check per byte: `body` writes at most
    /// `maxBytes` bytes and `maxArguments` arguments (room for them is made first, once).
    public mutating func write(maxBytes: Int, maxArguments: Int, _ body: (inout ArgumentWriter) -> Void) {
        let b0 = bytes.count, a0 = lengths.count
        Self.grow(&bytes, by: maxBytes)
        lengths.append(contentsOf: repeatElement(0, count: maxArguments))
        let (usedBytes, usedArguments) = bytes.withUnsafeMutableBufferPointer { b in
            lengths.withUnsafeMutableBufferPointer { l in
                var w = ArgumentWriter(bytes: b.baseAddress! + b0, lengths: l.baseAddress! + a0, maxBytes: maxBytes, maxArguments: maxArguments)
                body(&w)
                return (w.byteCount, w.argumentCount)
            }
        }
        bytes.removeLast(maxBytes - usedBytes)
        lengths.removeLast(maxArguments - usedArguments)
    }

    /// Zeros copied to make room (a copy is faster than appending a repeated element).
    private static let zeros = [UInt8](repeating: 0, count: 4096)

    private static func grow(_ bytes: inout [UInt8], by n: Int) {
        var left = n
        while left > 0 {
            let k = min(left, zeros.count)
            bytes.append(contentsOf: zeros[0..<k])
            left -= k
        }
    }


    /// The i-th argument.
    public func argument(_ i: Int) -> ArraySlice<UInt8> {
        var offset = 0
        for j in 0..<i { offset += lengths[j] }
        return bytes[offset..<(offset + lengths[i])]
    }

    /// The arguments as strings (for logs and tests).
    public var strings: [String] {
        var out: [String] = []
        var offset = 0
        for n in lengths {
            out.append(String(decoding: bytes[offset..<(offset + n)], as: UTF8.self))
            offset += n
        }
        return out
    }

    /// The command name (first argument), upper-cased, for logs.
    public var name: String { argc == 0 ? "" : String(decoding: argument(0), as: UTF8.self).uppercased() }
}

/// Writes arguments into room made for them (`RedisCommand.write`), through pointers: no capacity
/// or uniqueness check per argument, numbers formatted in place.
public struct ArgumentWriter {
    let bytes: UnsafeMutablePointer<UInt8>
    let lengths: UnsafeMutablePointer<Int>
    let maxBytes: Int
    let maxArguments: Int
    public private(set) var byteCount = 0
    public private(set) var argumentCount = 0
    /// Where the argument being written starts.
    private var start = 0

    /// The most bytes a number (Int64, UInt64 or Double) takes as text.
    public static let maxNumberBytes = 32

    /// The most bytes `value` takes as text.
    public static func maxBytes(_ value: borrowing FieldValue) -> Int {
        switch value {
        case .string(let s): s.utf8.count
        default: maxNumberBytes
        }
    }

    init(bytes: UnsafeMutablePointer<UInt8>, lengths: UnsafeMutablePointer<Int>, maxBytes: Int, maxArguments: Int) {
        self.bytes = bytes
        self.lengths = lengths
        self.maxBytes = maxBytes
        self.maxArguments = maxArguments
    }

    // MARK: parts of an argument

    /// Bytes of the current argument.
    public mutating func part(_ source: UnsafeRawBufferPointer) {
        precondition(byteCount + source.count <= maxBytes, "ArgumentWriter: more bytes than the room made")
        if let s = source.baseAddress, source.count > 0 {
            (bytes + byteCount).update(from: s.assumingMemoryBound(to: UInt8.self), count: source.count)
        }
        byteCount += source.count
    }

    public mutating func part(_ s: String) {
        // In place for a native string (no copy, no retain); a bridged one is made native first.
        if s.utf8.withContiguousStorageIfAvailable({ part(UnsafeRawBufferPointer($0)) }) == nil {
            var s = s
            s.withUTF8 { part(UnsafeRawBufferPointer($0)) }
        }
    }

    public mutating func part(_ s: StaticString) {
        s.withUTF8Buffer { part(UnsafeRawBufferPointer($0)) }
    }

    public mutating func part(_ b: [UInt8]) {
        b.withUnsafeBytes { part($0) }
    }

    public mutating func part(_ b: ArraySlice<UInt8>) {
        b.withUnsafeBytes { part($0) }
    }

    public mutating func part(byte: UInt8) {
        precondition(byteCount < maxBytes, "ArgumentWriter: more bytes than the room made")
        bytes[byteCount] = byte
        byteCount += 1
    }

    /// Ends the current argument.
    public mutating func end() {
        precondition(argumentCount < maxArguments, "ArgumentWriter: more arguments than the room made")
        lengths[argumentCount] = byteCount - start
        argumentCount += 1
        start = byteCount
    }

    // MARK: whole arguments

    public mutating func argument(_ s: String) { part(s); end() }
    public mutating func argument(_ s: StaticString) { part(s); end() }
    public mutating func argument(_ b: [UInt8]) { part(b); end() }
    public mutating func argument(_ v: Int64) { digits(v); end() }

    /// A stream ID, `ms-seq`.
    public mutating func argument(_ id: StreamID) {
        digits(magnitude: id.ms)
        part(byte: UInt8(ascii: "-"))
        digits(magnitude: id.seq)
        end()
    }

    /// A field value as text: integers and integral floats as digits, other floats in their shortest
    /// round-tripping form.
    public mutating func argument(_ value: FieldValue) {
        switch value {
        case .int(let i): digits(i)
        case .uint(let u): digits(magnitude: u)
        case .double(let d): double(d)
        case .bool(let b): part(b ? "true" : "false")
        case .string(let s): part(s)
        }
        end()
    }

    public mutating func argument(double d: Double) { double(d); end() }

    /// A float as `LineProtocol.formatDouble` writes it: integral values as digits; a value under
    /// 10^9 and at least 10^-4 with at most 6 decimals as `int.frac` (the shortest text that reads
    /// back as exactly `d`, as `description` gives); any other in its shortest round-tripping form.
    mutating func double(_ d: Double) {
        let magnitude = abs(d)
        // Conversions truncate in one instruction (no libm rounding call); false for NaN and ±inf.
        if magnitude < 1e16, Double(Int64(d)) == d {
            digits(Int64(d))
            return
        }
        if magnitude >= 1e-4, magnitude < 1e9 {
            // Under 10^15, exact in a Double, so the division is correctly rounded: when it gives
            // back `magnitude`, `scaled / 10^6` reads back as exactly `magnitude`. Near `magnitude`
            // (under 10^9, so within 10^-7 of it in steps of 10^-6) no other 6-decimal number does,
            // so with its trailing zeros cut it is the shortest such text. (Should the rounding
            // here be off by one, the check fails and the general form below is written.)
            let scaled = UInt64(magnitude * 1e6 + 0.5)
            if Double(scaled) / 1e6 == magnitude {
                if d < 0 { part(byte: UInt8(ascii: "-")) }
                digits(magnitude: scaled / 1_000_000)
                var frac = scaled % 1_000_000
                var k = 6
                while k > 1, frac % 10 == 0 {
                    frac /= 10
                    k -= 1
                }
                part(byte: UInt8(ascii: "."))
                precondition(byteCount + k <= maxBytes, "ArgumentWriter: more bytes than the room made")
                var i = byteCount + k
                while i > byteCount {
                    i -= 1
                    bytes[i] = UInt8(ascii: "0") + UInt8(frac % 10)
                    frac /= 10
                }
                byteCount += k
                return
            }
        }
        part(String(d))
    }

    mutating func digits(_ v: Int64) {
        if v < 0 { part(byte: UInt8(ascii: "-")) }
        digits(magnitude: v.magnitude)
    }

    /// "00" to "99": two digits per division when writing a number.
    private static let pairs: StaticString = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

    mutating func digits(magnitude: UInt64) {
        var count = 1
        var power: UInt64 = 10
        while count < 20, magnitude >= power {
            count += 1
            power = power &* 10
        }
        precondition(byteCount + count <= maxBytes, "ArgumentWriter: more bytes than the room made")
        let pairs = Self.pairs.utf8Start
        var v = magnitude
        var i = byteCount + count
        while v >= 100 {
            let pair = Int(v % 100) * 2
            v /= 100
            i -= 2
            bytes[i] = pairs[pair]
            bytes[i + 1] = pairs[pair + 1]
        }
        if v >= 10 {
            let pair = Int(v) * 2
            i -= 2
            bytes[i] = pairs[pair]
            bytes[i + 1] = pairs[pair + 1]
        } else {
            i -= 1
            bytes[i] = UInt8(ascii: "0") + UInt8(v)
        }
        byteCount += count
    }
}
