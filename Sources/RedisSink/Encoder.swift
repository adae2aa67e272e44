import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import Synchronization

/// Where an input's records go: the output's key template and stream length, or the instance's own.
public struct Route: Sendable, Equatable {
    public var key: KeyTemplate
    public var maxlen: Int

    public init(key: KeyTemplate, maxlen: Int) {
        self.key = key
        self.maxlen = maxlen
    }
}

/// Turns records into commands for the configured layout. Owns the stream ID minter and the set of
/// timeseries already created.
public struct BatchEncoder: Sendable {
    public let config: RedisOutputConfig
    public let routes: [Route]
    /// The run's stream ID minter, shared by every copy of the encoder (see `SharedStreamIDs`).
    public let ids: SharedStreamIDs
    /// Series created (or found existing) in this run; TS.CREATE is sent for the others. Shared by
    /// the copies of the encoder (the send stage marks, the encode stage reads).
    let createdSeries = SeriesRegistry()
    /// Records per TS.MADD command.
    static let recordsPerMADD = 32
    /// Series this encoder found in `createdSeries` (so it no longer takes its lock for them).
    private var knownSeries: Set<KeyBytes> = []
    /// Record shapes (see `encodeSeries`) whose series are all known to exist.
    private var knownShapes: Set<KeyBytes> = []
    static let maxKnownSeries = 1_000_000
    /// The registry's generation when this encoder last looked.
    private var seenGeneration = 0

    /// Each route's MAXLEN as text (written into every XADD: formatted once).
    private let maxlenTexts: [[UInt8]]

    public init(config: RedisOutputConfig, routes: [Route], minter: StreamIDMinter) {
        self.config = config
        self.routes = routes
        maxlenTexts = routes.map { Array(String($0.maxlen).utf8) }
        self.ids = SharedStreamIDs(minter)
    }

    /// `lastIDInRedis`, for explicit stream IDs: the stream's last ID in Redis (`.some(nil)`: no
    /// stream; nil: unknown now), asked the first time a key is met in this run, before minting.
    public mutating func encode(_ records: [QueuedRecord], now: Int64,
                                lastIDInRedis: (([UInt8]) -> StreamID??)? = nil) -> EncodedBatch {
        var batch = switch config.format {
        case .stream: encodeStreams(records, now: now, lastIDInRedis: config.ids == .explicit ? lastIDInRedis : nil)
        case .timeseries: encodeSeries(records)
        }
        Self.collectCheckpoints(records, into: &batch)
        return batch
    }

    /// The last checkpoint of each file in `records`, in the order files first appear.
    static func collectCheckpoints(_ records: [QueuedRecord], into batch: inout EncodedBatch) {
        var position: [FileIdentity: Int] = [:]
        // Lines come in runs of one file: within a run only the file is compared (no hashing, no
        // copy), and the run's last checkpoint is taken when it ends.
        records.withUnsafeBufferPointer { records in
            var run: (identity: FileIdentity, last: Int)?
            func endRun() {
                guard let r = run, let c = records[r.last].checkpoint else { return }
                if let at = position[r.identity] {
                    batch.checkpoints[at] = c
                } else {
                    position[r.identity] = batch.checkpoints.count
                    batch.checkpoints.append(c)
                }
            }
            for i in records.indices {
                guard let identity = records[i].checkpoint?.identity else { continue }
                batch.lineCount += 1
                if run?.identity == identity {
                    run?.last = i
                } else {
                    endRun()
                    run = (identity, i)
                }
            }
            endRun()
        }
    }

    /// The arguments the records of one route, name and tag set share in a batch, taken from the
    /// command of the first of a run of them and copied for the next: the XADD's head (`XADD key
    /// [MINID|MAXLEN ~ n]`) and its tags (`tag_K v …`), with the key (not rendered again) and the
    /// key's last ID (its mark, kept here through the run: no lookup per record; handed back to the
    /// minter when the run ends).
    struct StreamRun {
        var route: Int
        var name: String
        /// Kept (retained), so the same storage means the same tags.
        var tags: [Tag]
        var fieldCount: Int
        var head: [UInt8]
        var headArguments: Int
        var keyContents: Range<Int>
        var tagBytes: [UInt8]
        var tagArguments: Int
        var key: [UInt8]
        var lastID: StreamID?

        func matches(_ q: UnsafePointer<QueuedRecord>, route: Int) -> Bool {
            route == self.route && Self.sameShape(q, name: name, tags: tags, fieldCount: fieldCount)
        }

        /// The same name, number of fields, and tags in the same storage (tailed lines share their
        /// file's tags; records that make their own tags never match).
        static func sameShape(_ q: UnsafePointer<QueuedRecord>, name: String, tags: [Tag], fieldCount: Int) -> Bool {
            guard q.pointee.record.tags.count == tags.count, q.pointee.fieldCount == fieldCount, q.pointee.record.name == name else { return false }
            let a = q.pointee.record.tags.withUnsafeBufferPointer { $0.baseAddress }
            let b = tags.withUnsafeBufferPointer { $0.baseAddress }
            return a == b
        }
    }

    mutating func encodeStreams(_ records: [QueuedRecord], now: Int64, lastIDInRedis: (([UInt8]) -> StreamID??)?) -> EncodedBatch {
        var batch = EncodedBatch(recordCount: records.count)
        // Sized like the last batch of this encoder, so a batch's storage grows at most once or twice.
        batch.reserve(bytes: streamBytesPerRecord * records.count, commands: records.count)
        var asked: Set<KeyBytes> = []
        let minID: String? = config.maxAge.map { age in "\(max(0, now - age) / 1_000_000)" }
        let explicit = config.ids == .explicit
        var run: StreamRun?
        // Through buffers: records, their fields and tags are read in place, not copied (no
        // retain and release per record, field and tag). The minter's lock is taken once a batch.
        ids.withMinter { minter in
        records.withUnsafeBufferPointer { records in routes.withUnsafeBufferPointer { routes in maxlenTexts.withUnsafeBufferPointer { maxlenTexts in
            for index in records.indices {
                let route = records[index].route
                let ms = UInt64(max(0, records[index].record.timestamp) / 1_000_000)
                // (Records are read through a pointer: no copy, so no retain and release of their parts.)
                let q = records.baseAddress! + index
                if run?.matches(q, route: route) == true {
                    // The same key, head and tags as the record before: copied. (Read in place:
                    // no copy of the run, so no retain of its arrays per record.)
                    let id: StreamID? = run!.lastID.map { StreamIDMinter.next(after: $0, ms: ms) }
                    run!.lastID = id
                    let maxBytes = run!.head.count + run!.tagBytes.count + 2 * ArgumentWriter.maxNumberBytes + 1 + 9
                        + ArgumentWriter.maxNumberBytes + Self.maxBytes(fieldsOf: q)
                    let maxArguments = run!.headArguments + run!.tagArguments + 3 + 2 * q.pointee.fieldCount
                    let (headArguments, keyContents, tagArguments) = (run!.headArguments, run!.keyContents, run!.tagArguments)
                    run!.head.withUnsafeBytes { head in run!.tagBytes.withUnsafeBytes { tags in
                        batch.writeCommand(maxBytes: maxBytes, maxArguments: maxArguments, keyArgument: 1, role: .record(index)) { w in
                            w.framed(head, count: headArguments, markedContents: keyContents)
                            if let id { w.argument(id) } else { w.argument("*") }
                            Self.writeFields(of: q, into: &w)
                            w.framed(tags, count: tagArguments)
                            w.argument("timestamp")
                            w.argument(Int64(ms))
                        }
                    } }
                    continue
                }
                // A new run: its key's mark back to the minter first.
                if let r = run, let id = r.lastID { minter.setMark(key: r.key, id: id) }
                run = nil
                routes[route].key.render(records[index].record, into: &tmpKey)
                // Records of a batch mostly share a key: a key not seeded yet is asked about once
                // per batch (at the first record of each run of it), so a Redis that does not
                // answer is asked again with the next batch, not at every record.
                if let lastIDInRedis, index == 0 || tmpKey != lastKey, !seededKeys.contains(KeyBytes(tmpKey)),
                   asked.insert(KeyBytes(tmpKey)).inserted {
                    if let known = lastIDInRedis(tmpKey) {
                        if let id = known { minter.observe(key: tmpKey, id: id) }
                        seededKeys.insert(KeyBytes(tmpKey))
                    }
                }
                let id: StreamID? = explicit ? minter.mint(key: tmpKey, ms: ms) : nil
                // The most the command can take, so it is written through pointers in one go.
                let maxBytes = 4 + tmpKey.count + 7 + (minID?.utf8.count ?? ArgumentWriter.maxNumberBytes)
                    + 2 * ArgumentWriter.maxNumberBytes + 1 + 9 + ArgumentWriter.maxNumberBytes
                    + Self.maxBytes(fieldsOf: q) + Self.maxBytes(tagsOf: records[index].record)
                let maxArguments = 8 + 2 * (q.pointee.fieldCount + q.pointee.record.tags.count)
                let maxlen = routes[route].maxlen
                var headArguments = 2
                batch.writeCommand(maxBytes: maxBytes, maxArguments: maxArguments, keyArgument: 1, role: .record(index)) { w in
                    w.argument("XADD")
                    w.argument(tmpKey)
                    if let minID {
                        w.argument("MINID"); w.argument("~"); w.argument(minID)
                        headArguments = 5
                    } else if maxlen > 0 {
                        w.argument("MAXLEN"); w.argument("~"); w.argument(maxlenTexts[route])
                        headArguments = 5
                    }
                    if let id { w.argument(id) } else { w.argument("*") }
                    Self.writeFields(of: q, into: &w)
                    Self.writeTags(of: records[index].record, into: &w)
                    w.argument("timestamp")
                    w.argument(Int64(ms))
                }
                // When the next record has this route, name and tags, it and those after it copy
                // what this one shares.
                let next = index + 1
                guard next < records.count, records[next].route == route,
                      StreamRun.sameShape(records.baseAddress! + next, name: records[index].record.name, tags: records[index].record.tags,
                                          fieldCount: records[index].fieldCount) else {
                    if tmpKey != lastKey { swap(&tmpKey, &lastKey) }
                    tmpKey.removeAll(keepingCapacity: true)
                    continue
                }
                let c = batch.commandCount - 1
                let head = batch.framedArguments(c, 0..<headArguments, contentsOf: 1)
                let firstTag = headArguments + 1 + 2 * records[index].fieldCount
                let tagArguments = 2 * records[index].record.tags.count
                run = StreamRun(route: route, name: records[index].record.name, tags: records[index].record.tags,
                                fieldCount: records[index].fieldCount, head: Array(head.bytes), headArguments: headArguments,
                                keyContents: head.contents!, tagBytes: Array(batch.framedArguments(c, firstTag..<(firstTag + tagArguments), contentsOf: -1).bytes),
                                tagArguments: tagArguments, key: tmpKey, lastID: id)
                swap(&tmpKey, &lastKey)
                tmpKey.removeAll(keepingCapacity: true)
            }
            if let r = run, let id = r.lastID { minter.setMark(key: r.key, id: id) }
        } } }
        }
        if !records.isEmpty {
            streamBytesPerRecord = batch.bytes.count / records.count + 16
        }
        return batch
    }

    /// The most a record's fields take as XADD arguments (`writeFields`).
    static func maxBytes(fieldsOf q: UnsafePointer<QueuedRecord>) -> Int {
        var n = q.pointee.message == nil ? 0 : 7 + Int(q.pointee.message.unsafelyUnwrapped.count)
        q.pointee.record.fields.withUnsafeBufferPointer { fields in
            for i in fields.indices { n += fields[i].key.utf8.count + ArgumentWriter.maxBytes(fields[i].value) }
        }
        return n
    }

    /// The most a record's tags take as XADD arguments (`writeTags`).
    static func maxBytes(tagsOf r: borrowing Record) -> Int {
        var n = 0
        r.tags.withUnsafeBufferPointer { tags in
            for i in tags.indices { n += 4 + tags[i].key.utf8.count + tags[i].value.utf8.count }
        }
        return n
    }

    /// An XADD's field-value pairs for a record's fields (a line's message first).
    static func writeFields(of q: UnsafePointer<QueuedRecord>, into w: inout ArgumentWriter) {
        if q.pointee.message != nil {
            w.argument("message")
            w.argument(q.pointee.message.unsafelyUnwrapped.bytes)
        }
        q.pointee.record.fields.withUnsafeBufferPointer { fields in
            for i in fields.indices {
                w.argument(fields[i].key)
                w.argument(fields[i].value)
            }
        }
    }

    /// An XADD's field-value pairs for a record's tags, as `tag_KEY`.
    static func writeTags(of r: borrowing Record, into w: inout ArgumentWriter) {
        r.tags.withUnsafeBufferPointer { tags in
            for i in tags.indices {
                w.part("tag_")
                w.part(tags[i].key)
                w.end()
                w.argument(tags[i].value)
            }
        }
    }

    /// A stream record's size in the last batch (bytes), for the next batch's reservation.
    private var streamBytesPerRecord = 256
    private var tmpKey: [UInt8] = []
    /// Stream keys whose last ID was read from Redis in this run.
    private var seededKeys: Set<KeyBytes> = []
    private var lastKey: [UInt8] = []

    /// The tags a template names (they are not repeated after it in a series key).
    /// (A handful at most: looked through, not hashed.)
    static func namedTags(_ template: KeyTemplate) -> [String] {
        Array(Set(template.tagKeys + (template.hasHost ? ["host"] : [])))
    }

    /// A series key is the template rendered for the record's field, then this: `:key=value` for
    /// every tag of `r` not in `named`, in tag order, so `cpu=cpu0` and `cpu=cpu1` never share a
    /// series. It is the same for every field of a record, so it is made once per record.
    /// Written into `suffix` (emptied first), the tags read in place.
    static func tagSuffix(_ r: borrowing Record, named: [String], into suffix: inout [UInt8]) {
        suffix.removeAll(keepingCapacity: true)
        r.tags.withUnsafeBufferPointer { tags in
            for i in tags.indices where !named.contains(tags[i].key) {
                suffix.append(UInt8(ascii: ":"))
                suffix.appendUTF8(tags[i].key)
                suffix.append(UInt8(ascii: "="))
                suffix.appendUTF8(tags[i].value)
            }
        }
    }

    func labels(_ r: Record, field: String, into c: inout RedisCommand) {
        c.append("LABELS")
        c.append("name"); c.append(r.name)
        c.append("field"); c.append(field)
        // A tag named like a label of ours (diskio's device `name`) is labelled `tag_name`.
        for t in r.tags {
            c.append(t.key == "name" || t.key == "field" ? "tag_" + t.key : t.key); c.append(t.value)
        }
    }

    mutating func encodeSeries(_ records: [QueuedRecord]) -> EncodedBatch {
        // A series was found gone since the last batch: what this encoder cached may include it.
        let generation = createdSeries.generation
        if generation != seenGeneration {
            seenGeneration = generation
            knownSeries.removeAll()
            knownShapes.removeAll()
        }
        var batch = EncodedBatch(recordCount: records.count)
        var setup: Set<KeyBytes> = []
        var madd = RedisCommand()
        var owners: [Int] = []
        var recordsInMADD = 0
        var rejected = 0
        var skipped = 0
        func flushMADD() {
            guard !owners.isEmpty else { return }
            batch.append(madd, keyArgument: 0, role: .samples(owners: owners))
            madd.removeAll()
            owners = []
            recordsInMADD = 0
        }
        let named = routes.map { Self.namedTags($0.key) }
        var key: [UInt8] = []
        // A record's series keys: its template rendered once with `{field}` left out, then per
        // field that with the field's name put in, and the record's tag suffix.
        var base: [UInt8] = []
        var fieldAt: [Int] = []
        var shape: [UInt8] = []
        var suffix: [UInt8] = []
        var stamp: [UInt8] = []
        for (index, q) in records.enumerated() {
            let r = q.fullRecord
            base.removeAll(keepingCapacity: true)
            fieldAt.removeAll(keepingCapacity: true)
            routes[q.route].key.render(r, fieldAt: &fieldAt, into: &base)
            Self.tagSuffix(r, named: named[q.route], into: &suffix)
            // The record's timestamp (ms), written once for all of its samples.
            stamp.removeAll(keepingCapacity: true)
            Self.appendDigits(r.timestamp / 1_000_000, to: &stamp)
            // The record's shape: its key without the field, its tag suffix, its numeric fields'
            // names. Once every series of a shape is known to exist, a record of that shape is
            // written in one pass, with no look-up per series.
            // (Each part with its length first, so no two shapes read alike.)
            shape.removeAll(keepingCapacity: true)
            func length(_ n: Int) { withUnsafeBytes(of: UInt32(truncatingIfNeeded: n).littleEndian) { shape.append(contentsOf: $0) } }
            length(base.count)
            shape.append(contentsOf: base)
            length(fieldAt.count)
            for at in fieldAt { length(at) }
            length(suffix.count)
            shape.append(contentsOf: suffix)
            // Fields are read in place (no retain and release per field); the numeric fields' names
            // total `nameBytes`.
            var numeric = 0
            var nameBytes = 0
            r.fields.withUnsafeBufferPointer { fields in
                for i in fields.indices where fields[i].value.number != nil {
                    let n = fields[i].key.utf8.count
                    length(n)
                    shape.appendUTF8(fields[i].key)
                    numeric += 1
                    nameBytes += n
                }
            }
            if numeric == 0 { rejected += 1 }
            if numeric > 0, knownShapes.contains(KeyBytes(shape)) {
                skipped += r.fields.count - numeric
                let maxBytes = 7 + fieldAt.count * nameBytes
                    + numeric * (base.count + suffix.count + stamp.count + ArgumentWriter.maxNumberBytes)
                let first = owners.isEmpty
                base.withUnsafeBytes { base in suffix.withUnsafeBytes { suffix in
                    madd.write(maxBytes: maxBytes, maxArguments: 1 + 3 * numeric) { w in
                        if first { w.argument("TS.MADD") }
                        r.fields.withUnsafeBufferPointer { fields in
                            for i in fields.indices {
                                guard let value = fields[i].value.number else { continue }
                                var from = 0
                                for at in fieldAt {
                                    w.part(UnsafeRawBufferPointer(rebasing: base[from..<at]))
                                    w.part(fields[i].key)
                                    from = at
                                }
                                w.part(UnsafeRawBufferPointer(rebasing: base[from...]))
                                w.part(suffix)
                                w.end()
                                w.argument(stamp)
                                w.argument(double: value)
                            }
                        }
                    }
                } }
                for _ in 0..<numeric { owners.append(index) }
            } else {
                var allKnown = true
                for f in r.fields {
                    guard let value = f.value.number else {
                        skipped += 1
                        continue
                    }
                    key.removeAll(keepingCapacity: true)
                    var from = 0
                    for at in fieldAt {
                        key.append(contentsOf: base[from..<at])
                        key.appendUTF8(f.key)
                        from = at
                    }
                    key.append(contentsOf: base[from...])
                    key.append(contentsOf: suffix)
                    // Series created in this run: asked of the shared registry (under its lock) only
                    // until this encoder has seen them there.
                    let known = knownSeries.contains(KeyBytes(key)) || {
                        guard createdSeries.contains(KeyBytes(key)) else { return false }
                        if knownSeries.count < Self.maxKnownSeries { knownSeries.insert(KeyBytes(key)) }
                        return true
                    }()
                    if !known { allKnown = false }
                    if !known, setup.insert(KeyBytes(key)).inserted {
                        for (c, keyArgument) in seriesCommands(key, labels: { labels(r, field: f.key, into: &$0) }) {
                            batch.append(c, keyArgument: keyArgument, role: .setup)
                        }
                    }
                    if owners.isEmpty { madd.append("TS.MADD") }
                    madd.append(bytes: key)
                    madd.append(bytes: stamp)
                    madd.append(double: value)
                    owners.append(index)
                }
    if numeric > 0, allKnown, knownShapes.count < Self.maxKnownSeries { knownShapes.insert(KeyBytes(shape)) }
            }
            recordsInMADD += 1
            if recordsInMADD >= Self.recordsPerMADD { flushMADD() }
        }
        flushMADD()
        batch.rejectedAtEncoding = rejected
        batch.skippedFields = skipped
        return batch
    }

    /// `v` in decimal.
    static func appendDigits(_ v: Int64, to out: inout [UInt8]) {
        if v < 0 { out.append(UInt8(ascii: "-")) }
        var m = v.magnitude
        let start = out.count
        repeat {
            out.append(UInt8(truncatingIfNeeded: m % 10) &+ 48)
            m /= 10
        } while m > 0
        out[start...].reverse()
    }

    /// Marks a series as created (its TS.CREATE succeeded or it existed).
    public func seriesCreated(_ key: [UInt8]) {
        createdSeries.insert(KeyBytes(key))
    }

    /// Marks a series as gone from Redis (a TS.MADD found no such key: Redis lost its data, or the
    /// key was deleted): every encoder sends its TS.CREATE again with the next record for it.
    public func seriesVanished(_ key: [UInt8]) {
        createdSeries.remove(KeyBytes(key))
    }

    /// The commands that create the series `key`, its rollups and their rules, with their key
    /// argument's index. `labels` appends a TS.CREATE's `LABELS …` (or nothing: the series is created
    /// bare); a rollup's TS.CREATE with labels also gets `rollup <aggregation>_<bucket>`.
    func seriesCommands(_ key: some Collection<UInt8>, labels: (inout RedisCommand) -> Void) -> [(command: RedisCommand, keyArgument: Int)] {
        var out: [(RedisCommand, Int)] = []
        var create = RedisCommand(["TS.CREATE"])
        create.append(bytes: key)
        create.append("RETENTION"); create.append(config.retentionMs)
        create.append("DUPLICATE_POLICY"); create.append("LAST")
        labels(&create)
        out.append((create, 1))
        for rollup in config.rollups {
            let name = "\(rollup.aggregation)_\(rollup.bucketText)"
            let dst = Array(key) + Array(":\(name)".utf8)
            var c = RedisCommand(["TS.CREATE"])
            c.append(bytes: dst)
            c.append("RETENTION"); c.append(rollup.retentionMs)
            c.append("DUPLICATE_POLICY"); c.append("LAST")
            let plain = c.argc
            labels(&c)
            if c.argc > plain { c.append("rollup"); c.append(name) }
            out.append((c, 1))
            var rule = RedisCommand(["TS.CREATERULE"])
            rule.append(bytes: key)
            rule.append(bytes: dst)
            rule.append("AGGREGATION"); rule.append(rollup.aggregation); rule.append(rollup.bucketMs)
            out.append((rule, 2))
        }
        return out
    }

    /// The commands that create a series found gone again, with no labels (they are not known
    /// from its key): its rollups and rules too. The next TS.CREATE the encoder sends for it finds
    /// it existing and has the writer set its labels (TS.ALTER).
    public func recreateCommands(for key: [UInt8]) -> [RedisCommand] {
        seriesCommands(key) { _ in }.map(\.command)
    }
}

/// The set of series known to exist, safe to share between threads. `generation` counts the series
/// found gone (removed): an encoder that saw another generation forgets what it cached.
public final class SeriesRegistry: Sendable {
    private struct State {
        var keys: Set<KeyBytes> = []
        var generation = 0
    }
    private let state = Mutex(State())

    public init() {}

    public func contains(_ key: KeyBytes) -> Bool { state.withLock { $0.keys.contains(key) } }
    public func insert(_ key: KeyBytes) { _ = state.withLock { $0.keys.insert(key) } }
    public func remove(_ key: KeyBytes) {
        state.withLock {
            $0.keys.remove(key)
            $0.generation += 1
        }
    }
    public var count: Int { state.withLock { $0.keys.count } }
    public var generation: Int { state.withLock { $0.generation } }
}
