import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

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
    /// room (backpressure). False: stop now. Each line is a record with its checkpoint (and, for
    /// format `raw`, its message apart: see `QueuedRecord`), of route 0 (the agent sets the route).
    public var deliver: (inout [QueuedRecord]) -> Bool
    /// Logs a notice (rotation, truncation, unreadable files) about the file at a path (its path
    /// as `files` matched it).
    public var log: (_ message: String, _ path: String) -> Void
    /// The tags every record gets (host, agent and instance tags), sorted.
    public var commonTags: [Tag]

    public init(offsets: [FileCheckpoint], firstStart: Bool, registerFirstStart: @escaping ([FileCheckpoint]) -> Void,
                saveOffsets: @escaping ([FileCheckpoint]) -> Void, forgetOffsets: @escaping ([FileIdentity]) -> Void,
                deliver: @escaping (inout [QueuedRecord]) -> Bool, log: @escaping (_ message: String, _ path: String) -> Void, commonTags: [Tag]) {
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
    /// What is read cut into lines: the line being assembled, and where it starts.
    var lines: LineSplitter
    /// The next byte to read.
    var offset: Int64 { lines.offset }
    var size: Int64 = 0
    /// Monotonic time of the last growth (or of opening).
    var lastChange: Int64
    /// The path no longer leads to this file (renamed, deleted, symlink retargeted): read to its end,
    /// then let go once it has not grown for `rotate_wait`.
    var rotatedAway = false
    /// The tags of its lines that have none of their own: `path` and the common tags.
    var tags: [Tag]?

    init(identity: FileIdentity, path: String, offset: Int64, maxLineBytes: Int, now: Int64) {
        self.identity = identity
        self.path = path
        self.currentPath = path
        self.lines = LineSplitter(maxLineBytes: maxLineBytes, offset: offset)
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
    var out: [QueuedRecord] = []
    /// Where lines of format `raw` keep their text.
    var chunks = LineChunkWriter()
    var stopped = false
    /// Files that could not be opened (logged once each).
    var unopenable: Set<FileIdentity> = []
    /// Committed checkpoints of files whose content changed while the agent was stopped (truncated,
    /// rewritten): records of content already read, for a copy of it found later.
    var displaced: [FileCheckpoint] = []
    /// New files whose bytes so far all begin a followed file's (a copy being written?): their size
    /// and since when it has not changed. Classified once they are longer, differ, or stop growing.
    var deferred: [FileIdentity: (size: Int64, since: Int64)] = [:]
    /// Offsets of committed files not found at start: forgotten after discovery unless a path leads to them.
    var pendingForget: [FileIdentity] = []
    var nextSeq = 0
    /// Lines emitted so far.
    public private(set) var emitted = 0
    /// Whether the last poll left a file with bytes it did not read because its read budget ran out:
    /// the next poll should come at once, not after the poll interval (else a file written faster
    /// than one budget per interval, 40 MiB/s, would fall behind, and a backlog is read at that pace).
    public private(set) var behind = false

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
        behind = false
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
            // Closed for the open-file bound (or not opened yet: found at the first start, read
            // from its end): open only when there is something to read, or when it was modified
            // (truncated and written again to the same size: its first bytes are compared then).
            if !f.rotatedAway, let st = statPath(f.currentPath), identityOf(st) == f.identity, Int64(st.st_size) == f.offset,
               mtimeOf(st) == f.mtime {
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
            if f.rotatedAway {
                // No longer at its path and rewritten in place (`cp` over an old copy keeps its
                // inode): it holds other content now, not more of the file it was followed for.
                // Let go; the copy is found for what it is by the file whose content it holds
                // (its truncation finds the copy next to it), or by the next discovery.
                release(f)
                released[f.identity] = nil
                lastGlob = nil
                return
            }
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
        if f.offset < f.size, budget <= 0 { behind = true }
        if f.offset >= f.size {
            // A copy does not grow: its last line is complete as it is (once its path leads elsewhere).
            if f.isCopy, f.lines.hasPartial, statPath(f.path).map(identityOf) != f.identity {
                f.lines.takePartial { emit(f, $0, now: now) }
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
        guard f.lines.hasPartial, now - f.lastChange >= options.partialTimeout else { return }
        f.lines.takePartial { emit(f, $0, now: now) }
    }

    /// Lets a file go: read to its end (its last partial line emitted), closed.
    func release(_ f: TrackedFile) {
        let lastChange = f.lastChange
        f.lines.takePartial { emit(f, $0, now: lastChange) }
        closeFile(f)
        files[f.identity] = nil
        released[f.identity] = f.seen
    }

    /// The file is shorter than what was read, or its first bytes changed: truncated in place, by
    /// copytruncate, or rewritten. The rest of the old content is read from its copy when one sits
    /// next to it (same first bytes, at least as long); then the file is read from its start.
    func truncated(_ f: TrackedFile, size: Int64, now: Int64) {
        let from = f.lines.lineStart
        if let copy = findCopy(of: f) {
            env.log("\(f.path) was truncated; reading the rest of its old content from \(copy.path)", f.path)
            let c = trackCopy(copy, of: f.path, from: max(from, known[copy.identity]?.offset ?? 0), stat: statPath(copy.path), now: now,
                              fingerprint: (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine))
            let before = emitted
            read(c, now: now)
            // A copy does not grow: its last line is complete as it is, and before the new lines.
            if c.offset >= c.size {
                c.lines.takePartial { emit(c, $0, now: now) }
                if c.rotatedAway { release(c) }
            }
            // Nothing left to read there: remember it as read, so a pattern matching it never takes
            // it for a new file (with lines, their checkpoints do this).
            if emitted == before { env.saveOffsets([c.checkpoint(c.offset)]) }
        } else {
            env.log("\(f.path) was truncated at \(from) bytes; reading it again from its start", f.path)
        }
        f.lines.restart(at: 0)
        f.size = size
        (f.fingerprint, f.fingerprintLength, f.fingerprintHasLine) = fingerprint(fd: f.fd, size: size)
    }

    // MARK: lines

    /// Cuts the `count` bytes just read at `f.offset` into lines (see `LineSplitter`), and emits them.
    func consume(_ f: TrackedFile, count: Int, now: Int64) {
        // The lines of one read are stamped with the time it was made (one clock read per read,
        // not per line).
        let wall = wallClockNanoseconds()
        guard options.parser.format == .raw else {
            buffer.withUnsafeBufferPointer { buf in
                // (`emit` does not touch `f.lines`.)
                f.lines.feed(UnsafeBufferPointer(rebasing: buf[..<count])) { line in emit(f, line, now: now, wall: wall) }
            }
            return
        }
        // Format `raw`, the hot path: what `emit` does, with what is the same for every line of this
        // read (the file's tags, its checkpoint but for the offset) taken once, and the lines and
        // chunks in locals (no access to this object's or the file's properties per line).
        let tags = fileTags(f)
        let name = options.parser.name
        let identity = f.identity
        let size = f.size
        var checkpoint = f.checkpoint(f.offset)
        var out: [QueuedRecord] = []
        var chunks = LineChunkWriter()
        swap(&out, &self.out)
        swap(&chunks, &self.chunks)
        var lines = 0
        buffer.withUnsafeBufferPointer { buf in
            f.lines.feed(UnsafeBufferPointer(rebasing: buf[..<count])) { line in
                checkpoint.offset = line.end
                checkpoint.size = max(size, line.end)
                if line.bytes.isEmpty, !line.truncated {
                    Self.skipEmpty(&out, identity, checkpoint)
                    return
                }
                out.append(Self.rawLine(line, chunks: &chunks, name: name, tags: tags, wall: wall, checkpoint: checkpoint))
                lines += 1
                if out.count >= Self.deliverChunk { deliver(&out) }
            }
        }
        swap(&out, &self.out)
        swap(&chunks, &self.chunks)
        emitted += lines
    }

    /// Hands a line on as a record with its checkpoint (`line.end`).
    /// `wall`: the record's timestamp when the line has none of its own (now, by default).
    func emit(_ f: TrackedFile, _ line: LineSplitter.Line, now: Int64, wall: Int64 = wallClockNanoseconds()) {
        // Empty lines carry nothing (as Telegraf's tail): skipped. (Their bytes count as read with the
        // next line of the file; after a restart they are skipped again.)
        if line.bytes.isEmpty, !line.truncated {
            Self.skipEmpty(&out, f.identity, f.checkpoint(line.end))
            return
        }
        if options.parser.format == .raw {
            out.append(Self.rawLine(line, chunks: &chunks, name: options.parser.name, tags: fileTags(f), wall: wall,
                                    checkpoint: f.checkpoint(line.end)))
        } else {
            var record = options.parser.parse(Array(line.bytes)[...], truncated: line.truncated, now: wall)
            if record.tags.isEmpty {
                // Mostly (no tag_keys): the file's tags, made once and shared by its lines.
                record.adoptTags(fileTags(f))
            } else {
                record.addTagIfAbsent("path", f.path)
                record.addTagsIfAbsent(env.commonTags)
            }
            out.append(QueuedRecord(record: record, route: 0, checkpoint: f.checkpoint(line.end)))
        }
        emitted += 1
        if out.count >= Self.deliverChunk { flush() }
    }

    /// An empty line carries nothing: the file's last line waiting in `out`, if any, takes its
    /// checkpoint (the empty line's bytes count as read with it).
    static func skipEmpty(_ out: inout [QueuedRecord], _ identity: FileIdentity, _ checkpoint: @autoclosure () -> FileCheckpoint) {
        if let last = out.indices.last, out[last].checkpoint?.identity == identity { out[last].checkpoint = checkpoint() }
    }

    /// A line of format `raw`: its text goes into a chunk, and the record shares its file's tags
    /// (nothing allocated per line but for a truncated line's field).
    static func rawLine(_ line: LineSplitter.Line, chunks: inout LineChunkWriter, name: String, tags: [Tag], wall: Int64,
                        checkpoint: FileCheckpoint) -> QueuedRecord {
        QueuedRecord(record: Record(name: name, sortedTags: tags, fields: line.truncated ? [Field("truncated", .bool(true))] : [], timestamp: wall),
                     route: 0, checkpoint: checkpoint, message: chunks.append(text: line.bytes))
    }

    /// The tags of a file's lines that have none of their own: `path` and the common tags, made once.
    func fileTags(_ f: TrackedFile) -> [Tag] {
        if let tags = f.tags { return tags }
        var tagged = Record(name: "", tags: [], fields: [], timestamp: 0)
        tagged.addTagIfAbsent("path", f.path)
        tagged.addTagsIfAbsent(env.commonTags)
        f.tags = tagged.tags
        return tagged.tags
    }

    func flush() {
        deliver(&out)
    }

    /// Hands `lines` on (unless stopped) and empties it.
    func deliver(_ lines: inout [QueuedRecord]) {
        guard !lines.isEmpty, !stopped else { return }
        if !env.deliver(&lines) { stopped = true }
        lines.removeAll(keepingCapacity: true)
        // (The agent takes the array's storage with the lines: room for the next chunk at once.)
        lines.reserveCapacity(Self.deliverChunk)
    }
}
