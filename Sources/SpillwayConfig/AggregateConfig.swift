import SpillwayCore

/// The key template of an aggregate series (`[aggregate] key`): literal text with `{host}`,
/// `{name}`, `{field}`, `{agg}`, `{bucket}` and `{tag.KEY}`. The rendered key is followed by every
/// tag the template does not name, as `:key=value` in tag order (as `format = "timeseries"` keys
/// are), so two tag sets never share a series.
public struct AggregateKeyTemplate: Sendable, Hashable, CustomStringConvertible {
    public enum Part: Sendable, Hashable {
        case literal(String)
        case host, name, field, agg, bucket
        case tag(String)
    }

    public let text: String
    public let parts: [Part]
    public var description: String { text }

    public static let defaultText = "agg:{host}:{name}:{field}:{agg}:{bucket}"

    public struct SyntaxError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Parses a template; the error says what is wrong and, after "; ", how to fix it.
    public init(_ text: String) throws(SyntaxError) {
        self.text = text
        var parts: [Part] = []
        var literal = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            literal += rest[..<open]
            guard let close = rest[open...].firstIndex(of: "}") else {
                throw SyntaxError(description: "key template \"\(text)\" has a { with no closing }; close it")
            }
            let name = rest[rest.index(after: open)..<close]
            if !literal.isEmpty { parts.append(.literal(literal)); literal = "" }
            switch name {
            case "host": parts.append(.host)
            case "name": parts.append(.name)
            case "field": parts.append(.field)
            case "agg": parts.append(.agg)
            case "bucket": parts.append(.bucket)
            default:
                guard name.hasPrefix("tag."), name.count > 4 else {
                    throw SyntaxError(description: "key template \"\(text)\" has an unknown placeholder {\(name)}; known: {host}, {name}, {field}, {agg}, {bucket}, {tag.KEY}")
                }
                parts.append(.tag(String(name.dropFirst(4))))
            }
            rest = rest[rest.index(after: close)...]
        }
        literal += rest
        if !literal.isEmpty { parts.append(.literal(literal)) }
        guard !parts.isEmpty else { throw SyntaxError(description: "key template is empty; write e.g. \"\(Self.defaultText)\"") }
        self.parts = parts
    }

    /// Tag keys the template names (`{tag.KEY}`, and `host` for `{host}`): not repeated in the suffix.
    public var namedTags: Set<String> {
        var out = Set<String>()
        for p in parts {
            if case .tag(let k) = p { out.insert(k) }
            if case .host = p { out.insert("host") }
        }
        return out
    }

    /// The key of one aggregate series: the template rendered, then `:key=value` for each tag not
    /// named by it, in tag order (`tags` sorted by key).
    public func render(host: String, name: String, field: String, agg: String, bucket: String, tags: [Tag]) -> String {
        var out = ""
        for p in parts {
            switch p {
            case .literal(let l): out += l
            case .host: out += host
            case .name: out += name
            case .field: out += field
            case .agg: out += agg
            case .bucket: out += bucket
            case .tag(let k): out += tags.first { $0.key == k }?.value ?? ""
            }
        }
        let named = namedTags
        for t in tags where !named.contains(t.key) {
            out += ":" + t.key + "=" + t.value
        }
        return out
    }
}

/// `[aggregate]`: what `spillway aggregate` reads (the metrics streams), how it buckets them, and
/// where the figures go (RedisTimeSeries, in the Redis of `[outputs.redis]`).
public struct AggregateConfig: Sendable, Equatable {
    /// A `buckets` entry: `"1m"`, or `"1m:7d"` with the retention of its series.
    public struct Bucket: Sendable, Equatable {
        public var ms: Int64
        /// As written (`1m`): the `{bucket}` of keys and the `bucket` label.
        public var text: String
        /// The series' retention (ms; 0 keeps every sample); `retention` when the entry has none.
        public var retentionMs: Int64
        public init(ms: Int64, text: String, retentionMs: Int64) {
            self.ms = ms
            self.text = text
            self.retentionMs = retentionMs
        }
    }

    /// Whether agent.toml or a drop-in has an `[aggregate]` table (`check` then shows it).
    public var declared = false
    /// `streams`: the SCAN MATCH pattern of the streams read. Default: `stream_key` with each
    /// placeholder as `*` (`metrics:*:*`).
    public var streams: String
    /// `stream_key`: the template the streams' keys were written with, to read `{name}` (and
    /// `{host}`) back from a key. Default: `[outputs.redis] key`.
    public var streamKey: KeyTemplate
    public var buckets: [Bucket]
    /// `grace`: a bucket closes this long after its end (ms). Default 30s.
    public var graceMs: Int64 = 30_000
    /// `group`: the consumer group every worker shares. Default "spillway-aggregate".
    public var group = "spillway-aggregate"
    /// `consumer`: this worker's name in the group (`--consumer` overrides). Default: `[agent] hostname`.
    public var consumer: String
    /// `retention`: of the aggregate series (ms; 0 keeps every sample). Default 0.
    public var retentionMs: Int64 = 0
    /// `key`: the template of aggregate series keys.
    public var key: AggregateKeyTemplate
    /// `claim_idle`: entries pending this long with another consumer are claimed (XAUTOCLAIM), ms. Default 1m.
    public var claimIdleMs: Int64 = 60_000
    /// `count`: XREADGROUP COUNT, entries per stream and read. Default 1000.
    public var count = 1000
    /// `batch`: entries one round reads at most (count × streams per XREADGROUP). Default 10000.
    public var batch = 10_000
    /// `max_open_buckets`: buckets waiting to close, at most; reading pauses beyond. Default 100000.
    public var maxOpenBuckets = 100_000
    /// `keep`: how long a written bucket's exact state stays, for late entries (ms). Default 10m.
    public var keepMs: Int64 = 600_000
    /// `scan_interval`: how often streams are looked for again (ms). Default 30s.
    public var scanIntervalMs: Int64 = 30_000
    /// `poll_interval`: the wait after a round that read nothing (ms). Default 500ms.
    public var pollIntervalMs: Int64 = 500

    public static let defaultBuckets = ["1m", "1h"]

    public init(streamKey: KeyTemplate = try! KeyTemplate(RedisOutputConfig.defaultStreamKey), consumer: String) {
        self.streamKey = streamKey
        self.streams = Self.pattern(of: streamKey)
        self.consumer = consumer
        key = try! AggregateKeyTemplate(AggregateKeyTemplate.defaultText)
        buckets = Self.defaultBuckets.map { Bucket(ms: Units.parseDuration($0)! / 1_000_000, text: $0, retentionMs: 0) }
    }

    /// A stream key template as a SCAN MATCH pattern: each placeholder `*`, glob characters of the
    /// literal text escaped.
    public static func pattern(of template: KeyTemplate) -> String {
        var out = ""
        for p in template.parts {
            switch p {
            case .literal(let bytes):
                for ch in String(decoding: bytes, as: UTF8.self) {
                    if "*?[]\\".contains(ch) { out.append("\\") }
                    out.append(ch)
                }
            default:
                if !out.hasSuffix("*") { out += "*" }
            }
        }
        return out
    }

    /// The state keys of a group: `spillway:agg:GROUP:` (the workers write them, `spillway query`
    /// reads them; docs/redis-layouts.md lists them).
    public var statePrefix: String { "spillway:agg:\(group):" }
    /// The due set: buckets whose figures are not written yet.
    public var dueKey: String { statePrefix + "due" }
    /// The bucket lengths of the worker started last, and the prefix of the per-length markers
    /// (`…:since:<bucket>`: since when the group buckets at that length).
    public var bucketsKey: String { statePrefix + "buckets" }
    public var sincePrefix: String { statePrefix + "since:" }

    /// The start of the state keys of a length's buckets: `…:b:<bucket_ms>:`.
    public func bucketStatePrefix(bucketMs: Int64) -> String { statePrefix + "b:\(bucketMs):" }

    /// A bucket's state hash (also its member in the due set): `…:b:<bucket_ms>:<start>:<stream>`.
    public func bucketStateKey(bucketMs: Int64, start: Int64, stream: String) -> String {
        bucketStatePrefix(bucketMs: bucketMs) + "\(start):\(stream)"
    }

    /// A bucket's state key read back; nil when it is not one of this group's.
    public func parseBucketStateKey(_ key: String) -> (bucketMs: Int64, start: Int64, stream: String)? {
        let prefix = statePrefix + "b:"
        guard key.hasPrefix(prefix) else { return nil }
        let parts = key.dropFirst(prefix.count).split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let ms = Int64(parts[0]), ms > 0, let start = Int64(parts[1]) else { return nil }
        return (ms, start, String(parts[2]))
    }

    /// What `[aggregate]` holds as read, before the other tables are known (the defaults of
    /// `stream_key`, `streams` and `consumer` come from `[outputs.redis]` and `[agent]`).
    struct Raw {
        var config: AggregateConfig
        var streamKey: KeyTemplate?
        var streams: String?
        var consumer: String?
        var retention: Int64?
        var bucketTexts: [(text: String, retention: Int64?)] = []
        var location: Diagnostic?
        var streamKeyLocation: Diagnostic?
    }

    /// Reads `[aggregate]`.
    static func read(_ r: inout OptionReader) -> Raw {
        var c = AggregateConfig(consumer: "")
        var raw = Raw(config: c)
        raw.location = Diagnostic(file: r.file.path, line: r.file.line(of: r.path), keyPath: r.path, message: "")
        if let text = r.optionalString("stream_key") {
            do {
                raw.streamKey = try KeyTemplate(text)
                raw.streamKeyLocation = r.location("stream_key")
            } catch {
                r.errorWithFix("stream_key", error.description)
            }
        }
        if let s = r.optionalString("streams") {
            if s.isEmpty { r.error("streams", "the pattern is empty", fix: "write e.g. \"metrics:*\", or leave it out for the pattern of stream_key") }
            else { raw.streams = s }
        }
        let bucketTexts = r.stringArray("buckets", default: defaultBuckets)
        if bucketTexts.isEmpty {
            r.error("buckets", "no buckets", fix: "write e.g. buckets = [\"1m\", \"1h\"]")
        }
        for text in bucketTexts {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let ns = Units.parseDuration(String(parts[0])) else {
                r.error("buckets", "\"\(text)\" is not a bucket", fix: "write a duration, e.g. \"1m\", or a duration and its retention, e.g. \"1m:7d\"")
                continue
            }
            guard ns >= 1_000_000_000, ns % 1_000_000 == 0 else {
                r.error("buckets", "bucket \"\(parts[0])\" is shorter than 1s or not a whole number of milliseconds", fix: "use at least \"1s\"")
                continue
            }
            var retention: Int64?
            if parts.count == 2 {
                guard let rt = Units.parseDuration(String(parts[1])) else {
                    r.error("buckets", "\"\(parts[1])\" in \"\(text)\" is not a retention", fix: "write e.g. \"1m:7d\" (\"0s\" keeps every sample)")
                    continue
                }
                retention = rt / 1_000_000
            }
            if raw.bucketTexts.contains(where: { Units.parseDuration($0.text) == ns }) {
                r.error("buckets", "bucket \"\(parts[0])\" is listed twice", fix: "list each bucket once")
                continue
            }
            raw.bucketTexts.append((String(parts[0]), retention))
        }
        c.graceMs = r.duration("grace", default: c.graceMs * 1_000_000) / 1_000_000
        c.group = r.string("group", default: c.group)
        if c.group.isEmpty { r.error("group", "the group name is empty", fix: "leave it out for \"spillway-aggregate\"") }
        if let consumer = r.optionalString("consumer") {
            if consumer.isEmpty { r.error("consumer", "the consumer name is empty", fix: "leave it out for [agent] hostname") }
            else { raw.consumer = consumer }
        }
        let retention = r.duration("retention", default: 0)
        if r.has("retention") { raw.retention = retention / 1_000_000 }
        let keyText = r.string("key", default: AggregateKeyTemplate.defaultText)
        do {
            let key = try AggregateKeyTemplate(keyText)
            let missing = [("field", AggregateKeyTemplate.Part.field), ("agg", .agg), ("name", .name)].filter { !key.parts.contains($0.1) }.map { "{\($0.0)}" }
            if !missing.isEmpty {
                r.error("key", "key \"\(keyText)\" has no \(missing.joined(separator: ", ")): series would share a key",
                        fix: "keep {name}, {field}, {agg} and {bucket} in it, e.g. \"\(AggregateKeyTemplate.defaultText)\"")
            }
            c.key = key
        } catch {
            r.errorWithFix("key", error.description)
        }
        c.claimIdleMs = r.duration("claim_idle", default: c.claimIdleMs * 1_000_000, minimum: 100_000_000) / 1_000_000
        c.count = r.int("count", default: c.count, range: 1...100_000)
        c.batch = r.int("batch", default: c.batch, range: 1...10_000_000)
        if c.batch < c.count, r.has("batch") {
            r.error("batch", "batch \(c.batch) is below count \(c.count)", fix: "use a batch of at least count (one stream's read)")
        }
        c.maxOpenBuckets = r.int("max_open_buckets", default: c.maxOpenBuckets, range: 1...100_000_000)
        c.keepMs = r.duration("keep", default: c.keepMs * 1_000_000) / 1_000_000
        c.scanIntervalMs = r.duration("scan_interval", default: c.scanIntervalMs * 1_000_000, minimum: 100_000_000) / 1_000_000
        c.pollIntervalMs = r.duration("poll_interval", default: c.pollIntervalMs * 1_000_000, minimum: 1_000_000) / 1_000_000
        raw.config = c
        return raw
    }

    /// The configuration once every file is read: the defaults taken from `[outputs.redis]` and
    /// `[agent]`, and the problems of the whole: `own` ones, of `[aggregate]`'s keys (errors when
    /// the table is declared), and `across` ones, of what `[outputs.redis]` says (the agent works
    /// with them; `check` warns, `aggregate` refuses to start).
    static func resolve(_ raw: Raw?, redis: RedisOutputConfig, agent: AgentConfig, redisKeyLocation: Diagnostic?) -> (AggregateConfig, own: [Diagnostic], across: [Diagnostic]) {
        var c = raw?.config ?? AggregateConfig(streamKey: redis.key, consumer: agent.hostname)
        c.declared = raw != nil
        c.streamKey = raw?.streamKey ?? redis.key
        c.streams = raw?.streams ?? pattern(of: c.streamKey)
        c.consumer = raw?.consumer ?? agent.hostname
        if let raw {
            c.retentionMs = raw.retention ?? 0
            c.buckets = raw.bucketTexts.map { Bucket(ms: Units.parseDuration($0.text)! / 1_000_000, text: $0.text, retentionMs: $0.retention ?? c.retentionMs) }
            if c.buckets.isEmpty { c.buckets = AggregateConfig(consumer: "").buckets }
        }
        c.buckets.sort { $0.ms < $1.ms }
        var own: [Diagnostic] = []
        var across: [Diagnostic] = []
        let at = raw?.location ?? Diagnostic(file: "", line: nil, keyPath: "aggregate", message: "")
        func problem(_ list: inout [Diagnostic], _ where_: Diagnostic?, _ message: String, fix: String) {
            let w = where_ ?? at
            list.append(Diagnostic(file: w.file, line: w.line, keyPath: w.keyPath, message: message, fix: fix))
        }
        if redis.format != .stream {
            problem(&across, at, "aggregate reads metrics streams, and [outputs.redis] format is \"\(redis.format.rawValue)\"",
                    fix: "aggregate works with format = \"stream\"; the timeseries format has rollups (rollups = [\"avg:1m:1d\"])")
        } else if !c.streamKey.parts.contains(.name) {
            let message = "stream key \"\(c.streamKey.text)\" has no {name}: the measurement of a stream cannot be read from its key"
            let fix = "set [aggregate] stream_key to the template with {name} the streams were written with"
            if let explicit = raw?.streamKeyLocation {
                problem(&own, explicit, message, fix: fix)
            } else {
                problem(&across, raw?.location ?? redisKeyLocation, message, fix: fix)
            }
        }
        if c.buckets.count > 1, !c.key.parts.contains(.bucket) {
            problem(&own, raw?.location, "key \"\(c.key.text)\" has no {bucket} and there are \(c.buckets.count) buckets: their series would share a key",
                    fix: "add {bucket} to [aggregate] key")
        }
        return (c, own, across)
    }
}
