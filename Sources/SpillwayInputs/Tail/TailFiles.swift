import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

// Files as the tailer sees them: stat, identity (device and inode), modification time, and
// fingerprints of their first bytes.
extension Tailer {
    func statPath(_ path: String) -> stat? {
        var st = stat()
        return stat(path, &st) == 0 ? st : nil
    }

    func identityOf(_ st: stat) -> FileIdentity {
        FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// `body` on the file at `path` opened for reading; nil when it cannot be opened.
    func withFile<T>(_ path: String, _ body: (Int32) -> T) -> T? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        return body(fd)
    }

    func mtimeOf(_ st: stat) -> Int64 {
        Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
    }

    /// The file's first bytes (at most `fingerprintBytes`, and at most `size`).
    func readHead(fd: Int32, size: Int64) -> [UInt8] {
        let n = Int(min(max(size, 0), Int64(FileCheckpoint.fingerprintBytes)))
        guard n > 0 else { return [] }
        var b = [UInt8](repeating: 0, count: n)
        let got = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, 0) }
        return Array(b.prefix(max(got, 0)))
    }

    /// The fingerprint of a file's first bytes `head`, its length, and whether it holds a whole line
    /// (or is full length).
    static func fingerprint(head: [UInt8]) -> (UInt64, Int, Bool) {
        guard !head.isEmpty else { return (0, 0, false) }
        return (FileCheckpoint.fingerprint(of: head), head.count, head.count >= FileCheckpoint.fingerprintBytes || head.contains(10))
    }

    /// The fingerprint of `head`'s first `length` bytes; nil when it is shorter.
    static func fingerprint(head: [UInt8], length: Int) -> UInt64? {
        guard length > 0 else { return 0 }
        guard length <= head.count else { return nil }
        return FileCheckpoint.fingerprint(of: head[..<length])
    }

    func fingerprint(fd: Int32, size: Int64) -> (UInt64, Int, Bool) {
        Self.fingerprint(head: readHead(fd: fd, size: size))
    }

    func fingerprint(path: String, length: Int) -> UInt64? {
        withFile(path) { fingerprint(fd: $0, length: length) } ?? nil
    }

    /// FNV-1a of the first `length` bytes, nil when the file is shorter.
    func fingerprint(fd: Int32, length: Int) -> UInt64? {
        guard length > 0 else { return 0 }
        var b = [UInt8](repeating: 0, count: length)
        let n = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, 0) }
        guard n == length else { return nil }
        return FileCheckpoint.fingerprint(of: b)
    }

    func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }
}
