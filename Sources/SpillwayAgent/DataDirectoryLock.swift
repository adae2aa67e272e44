#if canImport(Glibc)
import Glibc
#endif

/// `run`'s exclusive hold on its data_dir: `flock(LOCK_EX)` on `data_dir/lock`, held for the
/// process's whole life (the kernel releases it when the process ends, `kill -9` included). The
/// file holds the holder's pid, for the message a second agent prints. `status` probes it with a
/// shared lock it drops at once; `once` and `check` never touch it.
public final class DataDirectoryLock: @unchecked Sendable {
    public let path: String
    private let fd: Int32

    public struct Held: Error, CustomStringConvertible {
        public var directory: String
        public var pid: Int32?
        public var description: String {
            "data_dir \(directory) is in use by another spillway run" + (pid.map { " (pid \($0))" } ?? "")
                + "; two agents on one data_dir would read the same files twice and share one buffer: stop it, or give this one another data_dir"
        }
    }

    public struct Failed: Error, CustomStringConvertible {
        public var description: String
    }

    /// Takes the lock, or throws `Held` naming the holder's pid. A `status` probing the lock holds
    /// it shared for an instant: tried again for up to a second before giving up.
    public init(directory: String) throws {
        path = directory + "/lock"
        let fd = path.withCString { Glibc.open($0, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        guard fd >= 0 else {
            throw Failed(description: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        var attempts = 0
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            guard e == EWOULDBLOCK || e == EINTR else {
                Glibc.close(fd)
                throw Failed(description: "cannot lock \(path): \(String(cString: strerror(e)))")
            }
            attempts += 1
            if attempts >= 20 {
                let pid = Self.readPID(fd)
                Glibc.close(fd)
                throw Held(directory: directory, pid: pid)
            }
            usleep(50_000)
        }
        self.fd = fd
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    deinit { Glibc.close(fd) }

    static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
        guard n > 0 else { return nil }
        return Int32(String(decoding: buffer[0..<n].prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }

    /// Whether a `run` holds `directory`'s lock now, and its pid. Never blocks and never keeps the
    /// lock: a shared lock taken and dropped at once.
    public static func holder(of directory: String) -> (held: Bool, pid: Int32?) {
        let fd = (directory + "/lock").withCString { Glibc.open($0, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return (false, nil) }
        defer { Glibc.close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            _ = flock(fd, LOCK_UN)
            return (false, nil)
        }
        return (true, readPID(fd))
    }
}
