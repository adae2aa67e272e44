import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

// Finding the files of `files` and telling them apart: new files, files rotated away (renamed, deleted,
// symlink retargeted), copytruncate's copies, content already read, an inode handed out again.
extension Tailer {
    /// A committed file no longer at its path (rotated while the agent was down): found by device
    /// and inode next to its old path and read from its offset; offsets of files gone are forgotten.
    func recoverRotated(now: Int64) {
        var gone: [FileIdentity] = []
        for (identity, c) in known {
            if let st = statPath(c.path), identityOf(st) == identity { continue }
            if let found = locate(identity, near: c.path, fingerprint: c) {
                let f = TrackedFile(identity: identity, path: c.path, offset: c.offset, maxLineBytes: options.maxLineBytes, now: now)
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
                    let f = TrackedFile(identity: c.identity, path: k.path, offset: k.offset, maxLineBytes: options.maxLineBytes, now: now)
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
            let f = TrackedFile(identity: c.identity, path: path, offset: offset, maxLineBytes: options.maxLineBytes, now: now)
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
        let c = TrackedFile(identity: copy.identity, path: path, offset: offset, maxLineBytes: options.maxLineBytes, now: now)
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

    // MARK: copies and rotated files

    static let compressed = [".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".Z"]

    /// A file next to `f` whose name starts with `f`'s, with `f`'s first bytes: what copytruncate left.
    func findCopy(of f: TrackedFile) -> (path: String, identity: FileIdentity)? {
        findCopy(near: f.currentPath, of: f.identity, fingerprint: f.fingerprint, length: f.fingerprintLength, atLeast: f.lines.lineStart)
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
}
