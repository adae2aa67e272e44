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

/// A record waiting to be written, with the index of its route.
public struct QueuedRecord: Sendable {
    public var record: Record
    public var route: Int
    /// For a tailed line: how far its file has been read once this line is delivered.
    public var checkpoint: FileCheckpoint?

    public init(record: Record, route: Int, checkpoint: FileCheckpoint? = nil) {
        self.record = record
        self.route = route
        self.checkpoint = checkpoint
    }
}

/// One command of a batch and what its reply settles.
public struct EncodedCommand: Sendable {
    public enum Role: Sendable, Equatable {
        /// An XADD: the reply settles record `index` of the batch.
        case record(Int)
        /// A TS.MADD: sample j belongs to record `owners[j]`; every sample of those records is here.
        case samples(owners: [Int])
        /// TS.CREATE / TS.CREATERULE for series `key`; "already exists" counts as done.
        case setup
    }

    public var command: RedisCommand
    /// The key the command writes (for logs).
    public var key: [UInt8]
    public var role: Role

    public init(command: RedisCommand, key: [UInt8], role: Role) {
        self.command = command
        self.key = key
        self.role = role
    }
}

/// A batch, encoded once: every record has its key and (for streams) its ID from here on, so a
/// resend is exactly what was sent before.
public struct EncodedBatch: Sendable {
    public var commands: [EncodedCommand]
    public var recordCount: Int
    /// Records that can never be written (timeseries: no numeric field), already settled as rejected.
    public var rejectedAtEncoding: Int
    /// Fields left out (timeseries: strings and booleans).
    public var skippedFields: Int
    /// Tailed files' checkpoints (the last of each file, in batch order): committed with the batch.
    /// Not serialized: once the batch is in the buffer they are too.
    public var checkpoints: [FileCheckpoint] = []
    /// Records that are tailed lines (a batch with lines is never dropped from the buffer).
    public var lineCount = 0

    public init(commands: [EncodedCommand], recordCount: Int, rejectedAtEncoding: Int, skippedFields: Int) {
        self.commands = commands
        self.recordCount = recordCount
        self.rejectedAtEncoding = rejectedAtEncoding
        self.skippedFields = skippedFields
    }
}

/// Turns records into commands for the configured layout. Owns the stream ID minter and the set of
/// timeseries already created.
public struct BatchEncoder: Sendable {
    public let config: RedisOutputConfig
    public let routes: [Route]
    public var minter: StreamIDMinter
    /// Series created (or found existing) in this run; TS.CREATE is sent for the others. Shared by
    /// the copies of the encoder (the send stage marks, the encode stage reads).
    let createdSeries = SeriesRegistry()
    /// Records per TS.MADD command.
    static let recordsPerMADD = 256
    /// Series this encoder found in `createdSeries` (so it no longer takes its lock for them).
    private var knownSeries: Set<KeyBytes> = []
    static let maxKnownSeries = 1_000_000

    public init(config: RedisOutputConfig, routes: [Route], minter: StreamIDMinter) {
        self.config = config
        self.routes = routes
        self.minter = minter
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
        for q in records {
            guard let c = q.checkpoint else { continue }
            batch.lineCount += 1
            if let i = position[c.identity] {
                batch.checkpoints[i] = c
            } else {
                position[c.identity] = batch.checkpoints.count
                batch.checkpoints.append(c)
            }
        }
    }

    mutating func encodeStreams(_ records: [QueuedRecord], now: Int64, lastIDInRedis: (([UInt8]) -> StreamID??)?) -> EncodedBatch {
        var commands: [EncodedCommand] = []
        commands.reserveCapacity(records.count)
        var asked: Set<KeyBytes> = []
        let minID: String? = config.maxAge.map { age in "\(max(0, now - age) / 1_000_000)" }
        // Through the buffer: records are read in place, not copied (no retain per record).
        records.withUnsafeBufferPointer { records in
            for index in records.indices {
                let r = records[index].record
                let route = routes[records[index].route]
                var c = RedisCommand()
                // The command's size, so its bytes are allocated once.
                var size = 96 + route.key.parts.count * 16
                for f in r.fields {
                    size += f.key.utf8.count + 24
                    if case .string(let v) = f.value { size += v.utf8.count }
                }
                for t in r.tags { size += 4 + t.key.utf8.count + t.value.utf8.count }
                c.reserve(bytes: size, arguments: 8 + 2 * (r.fields.count + r.tags.count))
                c.append("XADD")
                let keyStart = c.argumentStart
                route.key.render(r, into: &tmpKey)
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
                c.appendToArgument(tmpKey)
                c.endArgument(start: keyStart)
                if let minID {
                    c.append("MINID"); c.append("~"); c.append(minID)
                } else if route.maxlen > 0 {
                    c.append("MAXLEN"); c.append("~"); c.append(Int64(route.maxlen))
                }
                let ms = UInt64(max(0, r.timestamp) / 1_000_000)
                switch config.ids {
                case .explicit: c.append(minter.mint(key: tmpKey, ms: ms))
                case .auto: c.append("*")
                }
                for f in r.fields {
                    c.append(f.key)
                    c.append(f.value)
                }
                for t in r.tags {
                    let start = c.argumentStart
                    c.appendToArgument("tag_".utf8)
                    c.appendToArgument(t.key.utf8)
                    c.endArgument(start: start)
                    c.append(t.value)
                }
                c.append("timestamp")
                c.append(Int64(ms))
                // Records of a batch mostly share a key: share its storage too (and keep tmpKey's
                // buffer unshared, so clearing it allocates nothing).
                if tmpKey != lastKey { lastKey = tmpKey }
                commands.append(EncodedCommand(command: c, key: lastKey, role: .record(index)))
                tmpKey.removeAll(keepingCapacity: true)
            }
        }
        return EncodedBatch(commands: commands, recordCount: records.count, rejectedAtEncoding: 0, skippedFields: 0)
    }

    private var tmpKey: [UInt8] = []
    /// Stream keys whose last ID was read from Redis in this run.
    private var seededKeys: Set<KeyBytes> = []
    private var lastKey: [UInt8] = []

    /// The tags a template names (they are not repeated after it in a series key).
    static func namedTags(_ template: KeyTemplate) -> Set<String> {
        Set(template.tagKeys + (template.hasHost ? ["host"] : []))
    }

    /// A series key is the template rendered for the record's field, then this: `:key=value` for
    /// every tag of `r` not in `named`, in tag order, so `cpu=cpu0` and `cpu=cpu1` never share a
    /// series. It is the same for every field of a record, so it is made once per record.
    static func tagSuffix(_ r: Record, named: Set<String>) -> [UInt8] {
        var suffix: [UInt8] = []
        for t in r.tags where !named.contains(t.key) {
            suffix.append(UInt8(ascii: ":"))
            suffix.append(contentsOf: t.key.utf8)
            suffix.append(UInt8(ascii: "="))
            suffix.append(contentsOf: t.value.utf8)
        }
        return suffix
    }

    func labels(_ r: Record, field: String, into c: inout RedisCommand) {
        c.append("LABELS")
        c.append("name"); c.append(r.name)
        c.append("field"); c.append(field)
        for t in r.tags where t.key != "name" && t.key != "field" {
            c.append(t.key); c.append(t.value)
        }
    }

    mutating func encodeSeries(_ records: [QueuedRecord]) -> EncodedBatch {
        var commands: [EncodedCommand] = []
        var setup: Set<KeyBytes> = []
        var madd = RedisCommand()
        var owners: [Int] = []
        var recordsInMADD = 0
        var rejected = 0
        var skipped = 0
        func flushMADD() {
            guard !owners.isEmpty else { return }
            commands.append(EncodedCommand(command: madd, key: Array("TS.MADD".utf8), role: .samples(owners: owners)))
            madd = RedisCommand()
            owners = []
            recordsInMADD = 0
        }
        let named = routes.map { Self.namedTags($0.key) }
        var key: [UInt8] = []
        for (index, q) in records.enumerated() {
            let r = q.record
            let template = routes[q.route].key
            let suffix = Self.tagSuffix(r, named: named[q.route])
            var any = false
            for f in r.fields {
                guard let value = f.value.number else {
                    skipped += 1
                    continue
                }
                any = true
                key.removeAll(keepingCapacity: true)
                template.render(r, field: f.key, into: &key)
                key.append(contentsOf: suffix)
                // Series created in this run: asked of the shared registry (under its lock) only
                // until this encoder has seen them there.
                let known = knownSeries.contains(KeyBytes(key)) || {
                    guard createdSeries.contains(KeyBytes(key)) else { return false }
                    if knownSeries.count < Self.maxKnownSeries { knownSeries.insert(KeyBytes(key)) }
                    return true
                }()
                if !known, setup.insert(KeyBytes(key)).inserted {
                    var create = RedisCommand(["TS.CREATE"])
                    create.append(bytes: key)
                    create.append("RETENTION"); create.append(config.retentionMs)
                    create.append("DUPLICATE_POLICY"); create.append("LAST")
                    labels(r, field: f.key, into: &create)
                    commands.append(EncodedCommand(command: create, key: key, role: .setup))
                    for rollup in config.rollups {
                        let dst = key + Array(":\(rollup.aggregation)_\(rollup.bucketText)".utf8)
                        var c = RedisCommand(["TS.CREATE"])
                        c.append(bytes: dst)
                        c.append("RETENTION"); c.append(rollup.retentionMs)
                        c.append("DUPLICATE_POLICY"); c.append("LAST")
                        labels(r, field: f.key, into: &c)
                        c.append("rollup"); c.append("\(rollup.aggregation)_\(rollup.bucketText)")
                        commands.append(EncodedCommand(command: c, key: dst, role: .setup))
                        var rule = RedisCommand(["TS.CREATERULE"])
                        rule.append(bytes: key)
                        rule.append(bytes: dst)
                        rule.append("AGGREGATION"); rule.append(rollup.aggregation); rule.append(rollup.bucketMs)
                        commands.append(EncodedCommand(command: rule, key: dst, role: .setup))
                    }
                }
                if owners.isEmpty { madd.append("TS.MADD") }
                madd.append(bytes: key)
                madd.append(r.timestamp / 1_000_000)
                madd.append(double: value)
                owners.append(index)
            }
            if !any { rejected += 1 }
            recordsInMADD += 1
            if recordsInMADD >= Self.recordsPerMADD { flushMADD() }
        }
        flushMADD()
        return EncodedBatch(commands: commands, recordCount: records.count, rejectedAtEncoding: rejected, skippedFields: skipped)
    }

    /// Marks a series as created (its TS.CREATE succeeded or it existed).
    public func seriesCreated(_ key: [UInt8]) {
        createdSeries.insert(KeyBytes(key))
    }
}

/// The set of series known to exist, safe to share between threads.
public final class SeriesRegistry: Sendable {
    private let keys = Mutex<Set<KeyBytes>>([])

    public init() {}

    public func contains(_ key: KeyBytes) -> Bool { keys.withLock { $0.contains(key) } }
    public func insert(_ key: KeyBytes) { _ = keys.withLock { $0.insert(key) } }
    public var count: Int { keys.withLock { $0.count } }
}
