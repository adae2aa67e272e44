import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// A line read from a tailed file, and how far its file is read once it is delivered.
public struct TailLine: Sendable {
    public var record: Record
    public var checkpoint: FileCheckpoint
}

/// What the tailer needs from the agent.
public struct TailEnvironment {
    /// Committed offsets from earlier runs (all files of all tail inputs).
    public var offsets: [FileCheckpoint]
    /// Whether this input starts for the first time (files present now are read from their end
    /// unless `from_beginning`).
    public var firstStart: Bool
    /// Records this input's first start with the end-of-file offsets it starts from.
    public var registerFirstStart: ([FileCheckpoint]) -> Void
    /// Saves offsets that no line carries (a consumed copy); forgets files that are gone.
    public var saveOffsets: ([FileCheckpoint]) -> Void
    public var forgetOffsets: ([FileIdentity]) -> Void
    /// Hands lines on, taking them out of the array (moved, not copied); waits while there is no
    /// room (backpressure). False: stop now.
    public var deliver: (inout [TailLine]) -> Bool
    /// Logs a notice (rotation, truncation, unreadable files) about the file at a path (its path
    /// as `files` matched it).
    public var log: (_ message: String, _ path: String) -> Void
    /// The tags every record gets (host, agent and instance tags), sorted.
    public var commonTags: [Tag]

    public init(offsets: [FileCheckpoint], firstStart: Bool, registerFirstStart: @escaping ([FileCheckpoint]) -> Void,
                saveOffsets: @escaping ([FileCheckpoint]) -> Void, forgetOffsets: @escaping ([FileIdentity]) -> Void,
                deliver: @escaping (inout [TailLine]) -> Bool, log: @escaping (_ message: String, _ path: String) -> Void, commonTags: [Tag]) {
        self.offsets = offsets
        self.firstStart = firstStart
        self.registerFirstStart = registerFirstStart
        self.saveOffsets = saveOffsets
        self.forgetOffsets = forgetOffsets
        self.deliver = deliver
        self.log = log
        self.commonTags = commonTags
    }
}

/// One file being followed.
final class TrackedFile {
    let identity: FileIdentity
    /// The path it was first found at (the `path` tag), and where it is now when known.
    let path: String
    var currentPath: String
    var fd: Int32 = -1
    var fingerprint: UInt64 = 0
    var fingerprintLength = 0
    /// The fingerprinted bytes hold a whole line (or are a full `fingerprintBytes`): a file with the
    /// same first bytes is taken for a copy of this one.
    var fingerprintHasLine = false
    /// Holds content of another file (copytruncate's copy): it does not grow, its last line is
    /// complete as it is.
    var isCopy = false
    /// Modification time (ns) when last seen, and the order it was taken up in: files no longer at
    /// their `path` are read oldest first.
    var mtime: Int64 = 0
    var seq = 0
    /// The next byte to read.
    var offset: Int64
    /// Where the line being assembled (`pending`) starts.
    var lineStart: Int64
    var pending: [UInt8] = []
    var pendingTruncated = false
    var size: Int64 = 0
    /// Monotonic time of the last growth (or of opening).
    var lastChange: Int64
    /// The path no longer leads to this file (renamed, deleted, symlink retargeted): read to its end,
    /// then let go once it has not grown for `rotate_wait`.
    var rotatedAway = false
    /// The tags of its lines that have none of their own: `path` and the common tags.
    var tags: [Tag]?

    init(identity: FileIdentity, path: String, offset: Int64, now: Int64) {
        self.identity = identity
        self.path = path
        self.currentPath = path
        self.offset = offset
        self.lineStart = offset
        self.lastChange = now
    }

    func checkpoint(_ offset: Int64) -> FileCheckpoint {
        FileCheckpoint(identity: identity, fingerprint: fingerprint, fingerprintLength: fingerprintLength,
                       offset: offset, size: max(size, offset), path: path)
    }
}

/// What a file not held open was last seen as. Device and inode name a file only while it exists:
/// once it is deleted, the next file created may get its inode. A file found later under the same
/// device and inode is the one remembered only if it still begins with the same bytes (or, known by
/// no bytes, has the same size and modification time): see `Tailer.stillSame`.
struct SeenFile {
    var size: Int64
    var mtime: Int64
    var fingerprint: UInt64
    var length: Int
}

extension TrackedFile {
    /// What it is remembered by once not held open.
    var seen: SeenFile { SeenFile(size: size, mtime: mtime, fingerprint: fingerprint, length: fingerprintLength) }
}

/// Follows the files of one `[[inputs.tail]]`: finds them (every `watch_interval`), reads new
/// lines, follows rotation, and hands the lines on with checkpoints. Owned by one thread; call
/// `poll` repeatedly.
public final class Tailer {
    public let options: TailOptions
    var env: TailEnvironment
    var files: [FileIdentity: TrackedFile] = [:]
    /// Committed offsets from earlier runs not yet matched to a file.
    var known: [FileIdentity: FileCheckpoint] = [:]
    /// Files let go in this run (read to their end): not taken for new ones while they exist.
    var released: [FileIdentity: SeenFile] = [:]
    /// New files whose first bytes equal a followed file's: copies (copytruncate), not read.
    var copies: [FileIdentity: SeenFile] = [:]
    var firstStart: Bool
    /// When `files` was last evaluated (nil: due now).
    var lastGlob: Int64?
    var started = false
    var openCount = 0
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    var out: [TailLine] = []
    var stopped = false
    /// Files that could not be opened (logged once each).
    var unopenable: Set<FileIdentity> = []
    /// Committed checkpoints of files whose content changed while the agent was stopped (truncated,
    /// rewritten): records of content already read, for a copy of it found later.
    var displaced: [FileCheckpoint] = []
    /// New files whose bytes so far all begin a followed file's (a copy being written?): their size
    /// and since when it has not changed. Classified once they are longer, differ, or stop growing.
    var deferred: [FileIdentity: (size: Int64, since: Int64)] = [:]
    var nextSeq = 0
    /// Lines emitted so far.
    public private(set) var emitted = 0

    /// Bytes read from one file in one poll at most (others get their turn).
    static let readBudget = 4 << 20
    /// Lines handed on at a time.
    static let deliverChunk = 512

    public init(options: TailOptions, environment: TailEnvironment) {
        self.options = options
        self.env = environment
        self.firstStart = environment.firstStart
        // Only this input's files (by the path they were first found at).
        for c in environment.offsets where options.covers(c.path) { known[c.identity] = c }
    }

    /// One round: discovery when due, then every file read up to its end (or its budget). Returns
    /// false once delivery was refused (stop).
    @discardableResult
    public func poll(now: Int64) -> Bool {
        if stopped { return false }
        if !started {
            started = true
            recoverRotated(now: now)
        }
        if lastGlob.map({ now - $0 >= options.watchInterval }) ?? true {
            lastGlob = now
            discover(now: now)
        }
        checkPaths(now: now)
        // Per `path`: the files no longer at it (rotated away, copies) first, oldest first; the file
        // at it only once they are all read to their end, so lines keep their order across rotations.
        var byPath: [String: [TrackedFile]] = [:]
        for f in files.values { byPath[f.path, default: []].append(f) }
        for path in byPath.keys.sorted() {
            guard !stopped else { break }
            let group = byPath[path]!
            if group.count == 1 {
                read(group[0], now: now)
                continue
            }
            let here = statPath(path).map(identityOf)
            let older = group.filter { $0.identity != here }.sorted { ($0.mtime, $0.seq) < ($1.mtime, $1.seq) }
            for f in older where !stopped { read(f, now: now) }
            let waits = older.contains { files[$0.identity] === $0 && $0.fd >= 0 && $0.offset < $0.size }
            if let current = group.first(where: { $0.identity == here }), !stopped, !waits {
                read(current, now: now)
            }
        }
        flush()
        return !stopped
    }

    /// Whether another file of `f`'s `path` (rotated away, or a copy) still has lines to read: they
    /// come before `f`'s. (A file that cannot be opened does not hold the others back.)
    func olderContentWaits(_ f: TrackedFile) -> Bool {
        files.values.contains { $0 !== f && $0.path == f.path && $0.fd >= 0 && $0.offset < $0.size }
    }

    func track(_ f: TrackedFile) {
        f.seq = nextSeq
        nextSeq += 1
        files[f.identity] = f
    }

    /// Per followed file: its path and the bytes it had at the last poll that are not read yet.
    public func lags() -> [(path: String, bytes: Int64)] {
        files.values.map { ($0.path, max(0, $0.size - $0.offset)) }.sorted { $0.path < $1.path }
    }

    /// Closes every file (at stop).
    public func close() {
        for f in files.values { closeFile(f) }
    }

    // MARK: discovery

    /// A committed file no longer at its path (rotated while the agent was down): found by device
    /// and inode next to its old path and read from its offset; offsets of files gone are forgotten.
    func recoverRotated(now: Int64) {
        var gone: [FileIdentity] = []
        for (identity, c) in known {
            if let st = statPath(c.path), identityOf(st) == identity { continue }
            if let found = locate(identity, near: c.path, fingerprint: c) {
                let f = TrackedFile(identity: identity, path: c.path, offset: c.offset, now: now)
                f.currentPath = found
                f.fingerprint = c.fingerprint
                f.fingerprintLength = c.fingerprintLength
                f.rotatedAway = true
                if let st = statPath(found) { f.mtime = mtimeOf(st) }
                track(f)
                known[identity] = nil
                env.log("resuming \(c.path) from \(found), where it was rotated to while the agent was stopped", c.path)
            } else {
                gone.append(identity)
            }
        }
        // Only offsets of files no matched path leads to either are forgotten (after discovery,
        // those still unmatched).
        pendingForget = gone
    }
    var pendingForget: [FileIdentity] = []

    /// Evaluates `files`. First every path is matched to a followed file or to its committed
    /// offset (same device and inode, same first bytes); only then are the other new files
    /// classified, so the outcome does not depend on the order of the paths: a copy of a followed
    /// file is not read (its lines are read there); a file whose first bytes are those of content
    /// already read (a committed checkpoint's fingerprint, at its length) is that content and is read
    /// from that checkpoint's offset; any other file is new.
    func discover(now: Int64) {
        let paths = GlobWalker.expand(options.files, exclude: options.exclude)
        var registered: [FileCheckpoint] = []
        var seen = Set<FileIdentity>()
        var candidates: [(path: String, identity: FileIdentity, size: Int64, mtime: Int64)] = []
        for path in paths {
            guard let st = statPath(path) else { continue }
            let identity = identityOf(st)
            if let f = followed(identity, at: path, st) {
                seen.insert(identity)
                f.currentPath = path
                continue
            }
            guard seen.insert(identity).inserted, !isReleased(identity, at: path, st), !isKnownCopy(identity, at: path, st) else { continue }
            candidates.append((path, identity, Int64(st.st_size), mtimeOf(st)))
        }
        // New files: their first bytes, read once.
        var heads: [FileIdentity: [UInt8]] = [:]
        var unclassified: [(path: String, identity: FileIdentity, size: Int64, mtime: Int64)] = []
        for c in candidates {
            let head = withFile(c.path) { readHead(fd: $0, size: c.size) }
            if let k = known[c.identity] {
                // Its committed offset: same first bytes (or, unreadable now, trusted by its inode
                // until it can be read; a changed file is then handled as truncated).
                if head.map({ Self.fingerprint(head: $0, length: k.fingerprintLength) == k.fingerprint }) ?? true {
                    let f = TrackedFile(identity: c.identity, path: k.path, offset: k.offset, now: now)
                    f.currentPath = c.path
                    f.size = c.size
                    f.mtime = c.mtime
                    if let head {
                        (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine) = Self.fingerprint(head: head)
                    } else {
                        (f.fingerprint, f.fingerprintLength) = (k.fingerprint, k.fingerprintLength)
                    }
                    known[c.identity] = nil
                    track(f)
                    continue
                }
                // Same inode, other content (truncated or rewritten while the agent was stopped):
                // its checkpoint still records what was read of the old content, and the rest of
                // that content is read from the copy next to it, when there is one.
                known[c.identity] = nil
                if k.identifiesContent {
                    displaced.append(k)
                    if let copy = findCopy(near: c.path, of: c.identity, fingerprint: k.fingerprint, length: k.fingerprintLength, atLeast: 0) {
                        adoptCopy(copy, of: k, now: now)
                        seen.insert(copy.identity)
                    }
                }
            }
            heads[c.identity] = head ?? []
            unclassified.append(c)
        }
        let records = known.values.filter(\.identifiesContent) + displaced
        // New files are compared with what the followed files hold now (a file truncated at the last
        // poll, since grown, is known by no bytes yet).
        if !unclassified.isEmpty {
            for f in files.values where !f.rotatedAway && f.fingerprintLength < FileCheckpoint.fingerprintBytes {
                extendFingerprint(f)
            }
        }
        for c in unclassified where files[c.identity] == nil {
            let head = heads[c.identity]!
            var hashes: [Int: UInt64] = [:]
            func matches(_ length: Int, _ fingerprint: UInt64) -> Bool {
                guard length > 0, length <= head.count else { return false }
                if let h = hashes[length] { return h == fingerprint }
                let h = Self.fingerprint(head: head, length: length)!
                hashes[length] = h
                return h == fingerprint
            }
            // Its bytes so far all begin a followed file's: perhaps a copy being written (logrotate
            // copies in chunks). Looked at again at the next evaluation, while it grows.
            if !firstStart, head.count < FileCheckpoint.fingerprintBytes, mayBeCopyInProgress(head, at: c.path) {
                let last = deferred[c.identity]
                let since = last?.size == c.size ? last!.since : now
                if now - since < max(options.rotateWait, 2 * options.watchInterval) {
                    deferred[c.identity] = (c.size, since)
                    continue
                }
            }
            deferred[c.identity] = nil
            if files.values.contains(where: { isCopy(c.path, of: $0, size: c.size, matches: matches) }) {
                // A copy of a followed file: its lines are read there.
                let (fp, length, _) = Self.fingerprint(head: head)
                copies[c.identity] = SeenFile(size: c.size, mtime: c.mtime, fingerprint: fp, length: length)
                continue
            }
            let (fp, fpLen, hasLine) = Self.fingerprint(head: head)
            var offset: Int64 = 0
            var path = c.path
            var readBefore = false
            // A record of a short file (its first bytes all of it, under 256) is taken only for a file
            // named as its rotations are (a shared header is too little to go by).
            if let k = records.filter({ matches($0.fingerprintLength, $0.fingerprint) && ($0.fingerprintLength >= 256 || isRotationName(c.path, of: $0.path)) })
                .max(by: { $0.offset < $1.offset }) {
                offset = min(k.offset, c.size)
                path = k.path
                readBefore = true
                env.log("\(c.path) holds content of \(k.path) already read to \(k.offset) bytes (same first \(k.fingerprintLength) bytes); it is read from \(offset)", c.path)
            } else if firstStart && !options.fromBeginning {
                offset = c.size
            }
            let f = TrackedFile(identity: c.identity, path: path, offset: offset, now: now)
            f.currentPath = c.path
            (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine) = (fp, fpLen, hasLine)
            f.size = c.size
            f.mtime = c.mtime
            f.isCopy = readBefore
            track(f)
            if firstStart { registered.append(f.checkpoint(offset)) }
            // Remembered at once: the checkpoint it matched may be overwritten by its file's new lines.
            if readBefore { env.saveOffsets([f.checkpoint(offset)]) }
        }
        copies = copies.filter { seen.contains($0.key) }
        deferred = deferred.filter { seen.contains($0.key) && files[$0.key] == nil }
        if !deferred.isEmpty { lastGlob = nil }  // looked at again at the next poll
        released = released.filter { seen.contains($0.key) }
        if firstStart {
            firstStart = false
            env.registerFirstStart(registered)
        }
        if !pendingForget.isEmpty {
            let forget = pendingForget.filter { !seen.contains($0) && files[$0] == nil }
            pendingForget = []
            env.forgetOffsets(forget)
            for i in forget { known[i] = nil }
        }
    }

    /// Whether `path` is named as a rotation of `original` is: next to it, its name longer and
    /// starting with the original's (`app.log.1`, `app.log-20260101`).
    func isRotationName(_ path: String, of original: String) -> Bool {
        let (dir, name) = split(path), (odir, oname) = split(original)
        return dir == odir && name != oname && name.hasPrefix(oname)
    }

    /// Follows `copy`, which holds the content checkpoint `k` was read from (its file was truncated or
    /// rewritten while the agent was stopped), from `k`'s offset.
    /// Follows `copy`, what copytruncate left of `path`'s old content, from `offset` (its lines
    /// tagged with `path`; a copy does not grow).
    func trackCopy(_ copy: (path: String, identity: FileIdentity), of path: String, from offset: Int64, stat st: stat?, now: Int64,
                   fingerprint: (UInt64, Int, Bool)) -> TrackedFile {
        let c = TrackedFile(identity: copy.identity, path: path, offset: offset, now: now)
        c.currentPath = copy.path
        (c.fingerprint, c.fingerprintLength, c.fingerprintHasLine) = fingerprint
        if let st {
            c.mtime = mtimeOf(st)
            c.size = Int64(st.st_size)
        }
        c.isCopy = true
        c.rotatedAway = !options.covers(copy.path)
        c.lastChange = now - options.rotateWait
        copies[copy.identity] = nil
        known[copy.identity] = nil
        track(c)
        return c
    }

    func adoptCopy(_ copy: (path: String, identity: FileIdentity), of k: FileCheckpoint, now: Int64) {
        guard let st = statPath(copy.path) else { return }
        let size = Int64(st.st_size)
        let offset = min(max(k.offset, known[copy.identity]?.offset ?? 0), size)
        let c = trackCopy(copy, of: k.path, from: offset, stat: st, now: now,
                          fingerprint: withFile(copy.path) { fingerprint(fd: $0, size: size) } ?? (k.fingerprint, k.fingerprintLength, false))
        c.size = size
        env.log("\(k.path) was truncated or rewritten while the agent was stopped; reading the rest of its old content from \(copy.path), from \(offset)", k.path)
        env.saveOffsets([c.checkpoint(offset)])
    }

    /// Whether `head`, the first bytes of a new file at `path` shorter than a fingerprint, all begin the
    /// fingerprinted bytes of a followed file that `path` is named as a rotation of (as a copy of it
    /// does while it is being written).
    func mayBeCopyInProgress(_ head: [UInt8], at path: String) -> Bool {
        let h = FileCheckpoint.fingerprint(of: head)
        return files.values.contains { f in
            guard !f.rotatedAway, f.fingerprintHasLine, head.count < f.fingerprintLength,
                  isRotationName(path, of: f.currentPath) || isRotationName(path, of: f.path) else { return false }
            if head.isEmpty { return true }
            let prefix = f.fd >= 0 ? fingerprint(fd: f.fd, length: head.count) : fingerprint(path: f.currentPath, length: head.count)
            return prefix == h
        }
    }

    /// Whether a new file (of `size` bytes, whose first bytes are compared by `matches`) is a copy of
    /// followed file `f`: it starts with `f`'s fingerprinted bytes, which hold a whole line. When
    /// those are all of `f` (shorter than `fingerprintBytes`), a new file longer than `f` is now is
    /// another file that starts the same way (a shared header), unless `f` has been truncated or
    /// rewritten since (copytruncate's copy seen after the truncation).
    func isCopy(_ path: String, of f: TrackedFile, size: Int64, matches: (Int, UInt64) -> Bool) -> Bool {
        // The file at a followed file's own path is never its copy (copytruncate's copy has a name
        // of its own): it is that file's successor, e.g. after a rename rotation with a header.
        guard path != f.path, !f.rotatedAway, f.fingerprintHasLine, matches(f.fingerprintLength, f.fingerprint) else { return false }
        if f.fingerprintLength >= FileCheckpoint.fingerprintBytes { return true }
        guard let st = statPath(f.currentPath), identityOf(st) == f.identity else { return false }
        if size <= Int64(st.st_size) { return true }
        return fingerprint(path: f.currentPath, length: f.fingerprintLength) != f.fingerprint
    }

    /// Marks files whose path now leads elsewhere (or nowhere) as rotated away.
    func checkPaths(now: Int64) {
        for f in files.values where !f.rotatedAway {
            if let st = statPath(f.currentPath), identityOf(st) == f.identity { continue }
            f.rotatedAway = true
            f.lastChange = now
            // Pick up the successor at once.
            lastGlob = nil
        }
    }

    // MARK: reading

    func open(_ f: TrackedFile, now: Int64, retry: Bool = true) -> Bool {
        if f.fd >= 0 { return true }
        if openCount >= options.maxOpenFiles {
            // Make room: close a file that is at its end and still at its path.
            guard let idle = files.values.first(where: { $0.fd >= 0 && !$0.rotatedAway && $0.offset >= $0.size && $0 !== f }) else { return false }
            closeFile(idle)
        }
        let fd = Glibc.open(f.currentPath, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            // Logged once per file (e.g. no permission); tried again at every poll.
            if unopenable.insert(f.identity).inserted, unopenable.count <= 10_000 {
                env.log("cannot open \(f.currentPath): \(String(cString: strerror(errno))); it is tried again", f.path)
            }
            return false
        }
        unopenable.remove(f.identity)
        var st = stat()
        // A copy or a file rotated away does not change: other first bytes under its inode are
        // another file's (the inode was reused after it was deleted). A file at its path may have
        // been truncated or rewritten (the read finds out).
        guard fstat(fd, &st) == 0, identityOf(st) == f.identity,
              !(f.isCopy || f.rotatedAway) || fingerprint(fd: fd, length: f.fingerprintLength) == f.fingerprint else {
            // The path leads elsewhere now: the file went while it was closed.
            Glibc.close(fd)
            if retry, let found = locate(f.identity, near: f.path, fingerprint: f.checkpoint(f.offset)), found != f.currentPath {
                f.currentPath = found
                f.rotatedAway = true
                return open(f, now: now, retry: false)
            }
            wentAway(f, because: "")
            release(f)
            return false
        }
        f.fd = fd
        openCount += 1
        return true
    }

    func closeFile(_ f: TrackedFile) {
        guard f.fd >= 0 else { return }
        Glibc.close(f.fd)
        f.fd = -1
        openCount -= 1
    }

    func read(_ f: TrackedFile, now: Int64) {
        // (Let go earlier in this poll: its inode was found holding another file.)
        guard files[f.identity] === f else { return }
        if f.fd < 0 {
            // Closed for the open-file bound: open only when there is something to read.
            if !f.rotatedAway, let st = statPath(f.currentPath), identityOf(st) == f.identity, Int64(st.st_size) == f.offset {
                maybeFlushPartial(f, now: now)
                return
            }
            guard open(f, now: now) else {
                if files[f.identity] === f, f.rotatedAway, statIdentity(f) == nil { release(f) }
                return
            }
        }
        var st = stat()
        guard fstat(f.fd, &st) == 0 else { return }
        let size = Int64(st.st_size)
        f.mtime = mtimeOf(st)
        if size < f.offset || (size > 0 && !fingerprintHolds(f)) {
            truncated(f, size: size, now: now)
            // The rest of the old content (from the copy) comes first.
            if olderContentWaits(f) { return }
        }
        f.size = size
        // The fingerprint grows with the file up to its full length, before lines are emitted with it.
        if f.fingerprintLength < FileCheckpoint.fingerprintBytes, size > Int64(f.fingerprintLength) {
            (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine) = fingerprint(fd: f.fd, size: size)
        }
        var budget = Self.readBudget
        var grew = false
        while f.offset < f.size, budget > 0, !stopped {
            let want = min(buffer.count, Int(f.size - f.offset), budget)
            let n = buffer.withUnsafeMutableBytes { pread(f.fd, $0.baseAddress, want, off_t(f.offset)) }
            if n <= 0 { break }
            budget -= n
            grew = true
            consume(f, count: n, now: now)
        }
        if grew { f.lastChange = now }
        if f.offset >= f.size {
            // A copy does not grow: its last line is complete as it is (once its path leads elsewhere).
            if f.isCopy, !f.pending.isEmpty, statPath(f.path).map(identityOf) != f.identity {
                emit(f, f.pending[...], truncated: f.pendingTruncated, end: f.offset, now: now)
                f.pending = []
                f.pendingTruncated = false
                f.lineStart = f.offset
            }
            maybeFlushPartial(f, now: now)
            if f.rotatedAway, now - f.lastChange >= options.rotateWait { release(f) }
        }
    }

    /// Takes more of a short file's first bytes into its fingerprint, when the file grew and still
    /// begins with the bytes it was known by (otherwise its read finds it truncated or rewritten).
    func extendFingerprint(_ f: TrackedFile) {
        func extend(_ fd: Int32) {
            var st = stat()
            guard fstat(fd, &st) == 0, identityOf(st) == f.identity, Int64(st.st_size) > Int64(f.fingerprintLength),
                  fingerprint(fd: fd, length: f.fingerprintLength) == f.fingerprint else { return }
            (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine) = fingerprint(fd: fd, size: Int64(st.st_size))
        }
        if f.fd >= 0 { extend(f.fd) } else { _ = withFile(f.currentPath, extend) }
    }

    /// Whether the file's first bytes are still those it was known by.
    func fingerprintHolds(_ f: TrackedFile) -> Bool {
        guard f.fingerprintLength > 0 else { return true }
        return fingerprint(fd: f.fd, length: f.fingerprintLength) == f.fingerprint
    }

    func maybeFlushPartial(_ f: TrackedFile, now: Int64) {
        guard !f.pending.isEmpty, now - f.lastChange >= options.partialTimeout else { return }
        emit(f, f.pending[...], truncated: f.pendingTruncated, end: f.offset, now: now)
        f.pending.removeAll(keepingCapacity: false)
        f.pendingTruncated = false
        f.lineStart = f.offset
    }

    /// Lets a file go: read to its end (its last partial line emitted), closed.
    func release(_ f: TrackedFile) {
        if !f.pending.isEmpty {
            emit(f, f.pending[...], truncated: f.pendingTruncated, end: f.offset, now: f.lastChange)
            f.pending = []
        }
        closeFile(f)
        files[f.identity] = nil
        released[f.identity] = f.seen
    }

    /// The file is shorter than what was read, or its first bytes changed: truncated in place, by
    /// copytruncate, or rewritten. The rest of the old content is read from its copy when one sits
    /// next to it (same first bytes, at least as long); then the file is read from its start.
    func truncated(_ f: TrackedFile, size: Int64, now: Int64) {
        let from = f.lineStart
        if let copy = findCopy(of: f) {
            env.log("\(f.path) was truncated; reading the rest of its old content from \(copy.path)", f.path)
            let c = trackCopy(copy, of: f.path, from: max(from, known[copy.identity]?.offset ?? 0), stat: statPath(copy.path), now: now,
                              fingerprint: (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine))
            let before = emitted
            read(c, now: now)
            // A copy does not grow: its last line is complete as it is, and before the new lines.
            if c.offset >= c.size {
                if !c.pending.isEmpty {
                    emit(c, c.pending[...], truncated: c.pendingTruncated, end: c.offset, now: now)
                    c.pending = []
                    c.lineStart = c.offset
                }
                if c.rotatedAway { release(c) }
            }
            // Nothing left to read there: remember it as read, so a pattern matching it never takes
            // it for a new file (with lines, their checkpoints do this).
            if emitted == before { env.saveOffsets([c.checkpoint(c.offset)]) }
        } else {
            env.log("\(f.path) was truncated at \(from) bytes; reading it again from its start", f.path)
        }
        f.pending = []
        f.pendingTruncated = false
        f.offset = 0
        f.lineStart = 0
        f.size = size
        (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine) = fingerprint(fd: f.fd, size: size)
    }

    static let compressed = [".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".Z"]

    /// A file next to `f` whose name starts with `f`'s, with `f`'s first bytes: what copytruncate left.
    func findCopy(of f: TrackedFile) -> (path: String, identity: FileIdentity)? {
        findCopy(near: f.currentPath, of: f.identity, fingerprint: f.fingerprint, length: f.fingerprintLength, atLeast: f.lineStart)
    }

    /// A file next to `path` whose name starts with its name, not followed, at least `atLeast` bytes
    /// long, whose first `length` bytes have `fingerprint` (the most recently modified of them).
    func findCopy(near path: String, of identity: FileIdentity, fingerprint fp: UInt64, length: Int,
                  atLeast: Int64) -> (path: String, identity: FileIdentity)? {
        guard length > 0 else { return nil }
        let (dir, base) = split(path)
        var best: (String, FileIdentity, Int)?
        for name in GlobWalker.entries(dir) {
            guard name != base, name.hasPrefix(base), !Self.compressed.contains(where: { name.hasSuffix($0) }) else { continue }
            let candidate = dir + "/" + name
            guard let st = statPath(candidate), (st.st_mode & S_IFMT) == S_IFREG else { continue }
            let other = identityOf(st)
            guard other != identity, !isReleased(other, at: candidate, st), followed(other, at: candidate, st) == nil,
                  Int64(st.st_size) >= atLeast,
                  fingerprint(path: candidate, length: length) == fp else { continue }
            let mtime = st.st_mtim.tv_sec
            if best == nil || mtime > best!.2 { best = (candidate, other, mtime) }
        }
        return best.map { ($0.0, $0.1) }
    }

    /// Where file `identity` (with `fingerprint`'s first bytes) is now: by device and inode among the
    /// files next to `path` whose names start with its name.
    func locate(_ identity: FileIdentity, near path: String, fingerprint c: FileCheckpoint) -> String? {
        let (dir, base) = split(path)
        for name in GlobWalker.entries(dir) where name != base && name.hasPrefix(base) {
            let p = dir + "/" + name
            guard let st = statPath(p), identityOf(st) == identity else { continue }
            if fingerprint(path: p, length: c.fingerprintLength) == c.fingerprint { return p }
        }
        return nil
    }

    /// Whether the file at `path` (`st`) is still the one `seen` describes, not another that got its
    /// device and inode after it was deleted (see `SeenFile`). Updates `seen` when it is.
    func stillSame(_ seen: inout SeenFile, at path: String, _ st: stat) -> Bool {
        let size = Int64(st.st_size), mtime = mtimeOf(st)
        // Known by no bytes (it was empty): by size and time alone. Otherwise by its first bytes
        // (a timestamp's granularity can hide a quick delete and create of the same size).
        guard seen.length > 0 else { return size == seen.size && mtime == seen.mtime }
        guard size >= Int64(seen.length), fingerprint(path: path, length: seen.length) == seen.fingerprint else { return false }
        (seen.size, seen.mtime) = (size, mtime)
        return true
    }

    /// The followed file with `identity`, when the file at `path` (`st`) is it. One not held open is
    /// checked (`stillSame`) unless it is at its path and may have been truncated (which its read
    /// handles): a copy or a file rotated away whose inode now holds another file is let go.
    func followed(_ identity: FileIdentity, at path: String, _ st: stat) -> TrackedFile? {
        guard let f = files[identity] else { return nil }
        if f.fd >= 0 { return f }
        if !f.isCopy, !f.rotatedAway {
            // At its path (reached here by that path or another link to it): truncation and
            // rewriting are for its read to find.
            if path == f.currentPath { return f }
            if let at = statPath(f.currentPath), identityOf(at) == identity { return f }
        }
        var seen = f.seen
        if stillSame(&seen, at: path, st) { return f }
        wentAway(f, because: "; another file has its inode now")
        release(f)
        released[identity] = nil  // (its inode is another file's now)
        return nil
    }

    /// Says that `f`, closed, is no longer where it was, and how much of it was not read.
    func wentAway(_ f: TrackedFile, because why: String) {
        let unread = f.size - f.offset
        env.log("\(f.path) went away while it was closed" + (unread > 0 ? "; \(unread) bytes were not read" : "") + why, f.path)
    }

    /// Whether the file at `path` is one let go in this run (and not another that got its inode).
    func isReleased(_ identity: FileIdentity, at path: String, _ st: stat) -> Bool {
        isStill(identity, in: &released, at: path, st)
    }

    /// Whether the file at `path` is a copy found before (and not another that got its inode).
    func isKnownCopy(_ identity: FileIdentity, at path: String, _ st: stat) -> Bool {
        isStill(identity, in: &copies, at: path, st)
    }

    /// Whether `known` holds `identity` and the file at `path` is still that file; forgets it when
    /// the inode is another file's now.
    func isStill(_ identity: FileIdentity, in known: inout [FileIdentity: SeenFile], at path: String, _ st: stat) -> Bool {
        guard var seen = known[identity] else { return false }
        let same = stillSame(&seen, at: path, st)
        known[identity] = same ? seen : nil
        return same
    }

    func statIdentity(_ f: TrackedFile) -> FileIdentity? {
        statPath(f.currentPath).map(identityOf)
    }

    // MARK: lines

    /// Splits the `count` bytes just read at `f.offset` into lines.
    func consume(_ f: TrackedFile, count: Int, now: Int64) {
        let base = f.offset
        buffer.withUnsafeBufferPointer { buf in
            var start = 0
            while start < count {
                let rest = count - start
                let nl = memchr(buf.baseAddress! + start, 10, rest)
                guard let nl else {
                    appendPending(f, buf[start..<count])
                    break
                }
                let end = buf.baseAddress!.distance(to: nl.assumingMemoryBound(to: UInt8.self))
                let lineEnd = base + Int64(end) + 1
                if f.pending.isEmpty {
                    let len = end - start
                    let cut = min(len, options.maxLineBytes)
                    emit(f, Array(buf[start..<(start + cut)])[...], truncated: len > options.maxLineBytes, end: lineEnd, now: now)
                } else {
                    appendPending(f, buf[start..<end])
                    emit(f, f.pending[...], truncated: f.pendingTruncated, end: lineEnd, now: now)
                    f.pending.removeAll(keepingCapacity: f.pending.capacity <= 4096)
                    f.pendingTruncated = false
                }
                f.lineStart = lineEnd
                start = end + 1
            }
        }
        f.offset = base + Int64(count)
    }

    func appendPending(_ f: TrackedFile, _ bytes: Slice<UnsafeBufferPointer<UInt8>>) {
        let room = options.maxLineBytes - f.pending.count
        if bytes.count > room {
            f.pending.append(contentsOf: bytes.prefix(max(0, room)))
            f.pendingTruncated = true
        } else {
            f.pending.append(contentsOf: bytes)
        }
    }

    func emit(_ f: TrackedFile, _ line: ArraySlice<UInt8>, truncated: Bool, end: Int64, now: Int64) {
        var line = line
        if line.last == 13 { line = line.dropLast() }
        // Empty lines carry nothing (as Telegraf's tail): skipped. (Their bytes count as read with the
        // next line of the file; after a restart they are skipped again.)
        if line.isEmpty, !truncated {
            if let last = out.last, last.checkpoint.identity == f.identity { out[out.count - 1].checkpoint = f.checkpoint(end) }
            return
        }
        var record = options.parser.parse(line, truncated: truncated, now: wallClockNanoseconds())
        if record.tags.isEmpty {
            // Mostly (no tag_keys): the file's tags, made once and shared by its lines.
            if f.tags == nil {
                var tagged = Record(name: "", tags: [], fields: [], timestamp: 0)
                tagged.addTagIfAbsent("path", f.path)
                tagged.addTagsIfAbsent(env.commonTags)
                f.tags = tagged.tags
            }
            record.adoptTags(f.tags!)
        } else {
            record.addTagIfAbsent("path", f.path)
            record.addTagsIfAbsent(env.commonTags)
        }
        out.append(TailLine(record: record, checkpoint: f.checkpoint(end)))
        emitted += 1
        if out.count >= Self.deliverChunk { flush() }
    }

    func flush() {
        guard !out.isEmpty, !stopped else { return }
        if !env.deliver(&out) { stopped = true }
        out.removeAll(keepingCapacity: true)
    }

    // MARK: files

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
