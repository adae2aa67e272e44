/// A device number as mountinfo writes it (`8:1`) and stat(2) reports it in `st_dev`.
public struct DeviceNumber: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    /// glibc's `dev_t` layout (gnu_dev_major/minor): 12 bits of major and 20 of minor split across
    /// the 64 bits.
    public init(dev: UInt64) {
        major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~UInt64(0xFFF)))
        minor = UInt32(truncatingIfNeeded: (dev & 0xFF) | ((dev >> 12) & ~UInt64(0xFF)))
    }

    public var description: String { "\(major):\(minor)" }

    /// `major:minor` from bytes; nil when it is not that.
    static func parse(_ t: ArraySlice<UInt8>) -> DeviceNumber? {
        guard let colon = t.firstIndex(of: UInt8(ascii: ":")),
              let major = parseUInt64(t[t.startIndex..<colon]), let minor = parseUInt64(t[(colon + 1)...]),
              major <= UInt32.max, minor <= UInt32.max
        else { return nil }
        return DeviceNumber(major: UInt32(major), minor: UInt32(minor))
    }
}

/// One line of /proc/PID/mountinfo.
public struct Mount: Sendable, Equatable {
    /// Where it is mounted, with `\040` (space), `\011` (tab), `\012` (newline) and `\134` (backslash)
    /// decoded.
    public var mountPoint: String
    /// The mount source (e.g. `/dev/sda1`), escapes decoded.
    public var source: String
    public var fsType: String
    /// The per-mount options (`rw,relatime`).
    public var options: String
    /// `ro` when the per-mount options say read-only, else `rw`.
    public var mode: String
    /// The file system's device number (st_dev of its files), when the line gave a valid one.
    public var device: DeviceNumber?

    public init(mountPoint: String, source: String, fsType: String, options: String, device: DeviceNumber? = nil) {
        self.device = device
        self.mountPoint = mountPoint
        self.source = source
        self.fsType = fsType
        self.options = options
        self.mode = Mount.isReadOnly(ArraySlice(options.utf8)) ? "ro" : "rw"
    }

    /// Whether a comma-separated option list holds `ro`.
    static func isReadOnly(_ options: ArraySlice<UInt8>) -> Bool {
        var start = options.startIndex
        for i in options.indices where options[i] == UInt8(ascii: ",") || i == options.endIndex - 1 {
            let end = options[i] == UInt8(ascii: ",") ? i : i + 1
            if equals(options[start..<end], "ro") { return true }
            start = i + 1
        }
        return false
    }
}

public enum MountInfo {
    /// Parses mountinfo: `id parent major:minor root mountpoint options [optional…] - fstype source super`.
    /// A line that cannot be read is left out and added to `skipped`.
    public static func parse(_ bytes: [UInt8], path: String = "self/mountinfo", skipped: inout SkippedLines) -> [Mount] {
        var s = ByteScanner(bytes)
        var mounts: [Mount] = []
        while !s.atEnd {
            defer { s.nextLine() }
            if s.atEndOfLine { continue }
            let line = s.line
            if s.onCutLine {
                skipped.cut(path, line: line)
                break
            }
            guard s.token() != nil, s.token() != nil, let deviceToken = s.token(), s.token() != nil,
                  let mountPoint = s.token(), let options = s.token()
            else {
                skipped.append(ProcFSError(path: path, line: line, kind: "too few fields", reason: "fewer than 6 fields before the separator"))
                continue
            }
            guard let device = DeviceNumber.parse(deviceToken) else {
                skipped.append(ProcFSError(path: path, line: line, kind: "bad device", reason: "\"\(string(deviceToken))\" is not major:minor"))
                continue
            }
            var sawSeparator = false
            while let t = s.token() {
                if equals(t, "-") {
                    sawSeparator = true
                    break
                }
            }
            guard sawSeparator, let fsType = s.token(), let source = s.token() else {
                skipped.append(ProcFSError(path: path, line: line, kind: "no separator", reason: "no \" - fstype source\" part"))
                continue
            }
            mounts.append(Mount(
                mountPoint: unescapeOctal(mountPoint),
                source: unescapeOctal(source),
                fsType: string(fsType),
                options: string(options),
                device: device
            ))
        }
        return mounts
    }

    /// Decodes the kernel's `\ooo` octal escapes; a malformed escape is kept as written.
    static func unescapeOctal(_ t: ArraySlice<UInt8>) -> String {
        guard t.contains(UInt8(ascii: "\\")) else { return string(t) }
        var out: [UInt8] = []
        out.reserveCapacity(t.count)
        var i = t.startIndex
        while i < t.endIndex {
            let b = t[i]
            if b == UInt8(ascii: "\\"), t.endIndex - i >= 4 {
                let d = t[(i + 1)..<(i + 4)]
                if d.allSatisfy({ $0 >= 0x30 && $0 <= 0x37 }) {
                    let v = d.reduce(0) { $0 * 8 + Int($1 - 0x30) }
                    if v <= 0xFF {
                        out.append(UInt8(v))
                        i += 4
                        continue
                    }
                }
            }
            out.append(b)
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
