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

    public mutating func append(_ s: String) {
        var s = s
        s.withUTF8 { append(bytes: $0) }
    }

    public mutating func append(_ s: StaticString) {
        s.withUTF8Buffer { append(bytes: $0) }
    }

    public mutating func append(bytes b: some Collection<UInt8>) {
        bytes.append(contentsOf: b)
        lengths.append(b.count)
    }

    public mutating func append(_ v: Int64) {
        let start = bytes.count
        appendDigits(v)
        lengths.append(bytes.count - start)
    }

    /// A field value as text: integers and integral floats as digits written in place (no String),
    /// other floats in their shortest round-tripping form.
    public mutating func append(_ value: FieldValue) {
        switch value {
        case .int(let i): append(i)
        case .uint(let u):
            if u <= UInt64(Int64.max) { append(Int64(u)) } else { append(String(u)) }
        case .double(let d): append(double: d)
        default: append(value.text)
        }
    }

    /// A float as text, as `LineProtocol.formatDouble` writes it: integral values as digits; a
    /// value with at most 6 decimals and under 10^9 as `int.frac` written in place (the
    /// shortest text that reads back as exactly `d`, as `description` gives, without a String);
    /// any other in its shortest round-tripping form.
    public mutating func append(double d: Double) {
        if d == d.rounded(), abs(d) < 1e16 {
            append(Int64(d))
            return
        }
        let magnitude = abs(d)
        if magnitude >= 1e-4, magnitude < 1e9 {
            var p = 1.0
            for k in 1...6 {
                p *= 10
                let scaled = (magnitude * p).rounded()
                // Both are exact in a Double (under 2^53), so the division is correctly rounded:
                // equal to `magnitude`, the text reads back as exactly it.
                guard scaled / p == magnitude else { continue }
                let n = UInt64(scaled), unit = UInt64(p)
                let start = bytes.count
                if d < 0 { bytes.append(UInt8(ascii: "-")) }
                appendDigits(magnitude: n / unit)
                bytes.append(UInt8(ascii: "."))
                // k digits, with leading zeros, written backwards in place.
                var frac = n % unit
                bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: k))
                var i = bytes.count
                while frac > 0 {
                    i -= 1
                    bytes[i] = UInt8(ascii: "0") + UInt8(frac % 10)
                    frac /= 10
                }
                lengths.append(bytes.count - start)
                return
            }
        }
        append(String(d))
    }

    /// A stream ID, `ms-seq`, written in place.
    public mutating func append(_ id: StreamID) {
        let start = bytes.count
        appendDigits(magnitude: id.ms)
        bytes.append(UInt8(ascii: "-"))
        appendDigits(magnitude: id.seq)
        lengths.append(bytes.count - start)
    }

    private mutating func appendDigits(_ v: Int64) {
        if v < 0 { bytes.append(UInt8(ascii: "-")) }
        appendDigits(magnitude: v.magnitude)
    }

    private mutating func appendDigits(magnitude: UInt64) {
        if magnitude < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(magnitude))
            return
        }
        // Written backwards into 20 bytes on the stack (UInt64.max has 20 digits), appended once.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var u = magnitude
            var i = 20
            while u > 0 {
                i -= 1
                digits[i] = UInt8(ascii: "0") + UInt8(u % 10)
                u /= 10
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[i...]))
        }
    }

    /// Starts an argument that the caller writes with `bytes` directly, ended by `endArgument(start:)`.
    public var argumentStart: Int { bytes.count }
    public mutating func appendToArgument(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
    public mutating func endArgument(start: Int) { lengths.append(bytes.count - start) }

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
