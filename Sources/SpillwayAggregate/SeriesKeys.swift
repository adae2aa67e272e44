import SpillwayBatch
import SpillwayConfig
import SpillwayCore

/// A metrics stream the worker reads: its key and what its key says (`stream_key` read back).
public struct StreamInfo: Sendable, Equatable {
    public var key: String
    /// The measurement (`{name}` of the key).
    public var name: String
    /// `{host}` of the key, when the template has it (the entries' `host` tag comes first).
    public var host: String?

    public init(key: String, name: String, host: String?) {
        self.key = key
        self.name = name
        self.host = host
    }

    /// The stream's key read with `template`; nil when it is not of that template.
    public init?(key: String, template: KeyTemplate) {
        guard let parts = template.match(key), let name = parts["name"] else { return nil }
        self.init(key: key, name: name, host: parts["host"])
    }
}

/// Keys and labels of aggregate series.
public struct SeriesKeys: Sendable {
    public let template: AggregateKeyTemplate

    /// Labels every aggregate series has besides the record's tags: a tag of one of these names is
    /// labelled `tag_NAME` (diskio's device `name`: `tag_name`), as the timeseries writer does.
    public static let reservedLabels: Set<String> = ["name", "field", "agg", "bucket", "bucket_ms", "rollup", "spillway"]

    public init(template: AggregateKeyTemplate) { self.template = template }

    public func host(_ stream: StreamInfo, _ tags: [Tag]) -> String {
        tags.first { $0.key == "host" }?.value ?? stream.host ?? ""
    }

    public func key(_ stream: StreamInfo, tags: [Tag], field: String, agg: Aggregation, bucket: AggregateConfig.Bucket) -> String {
        template.render(host: host(stream, tags), name: stream.name, field: field, agg: agg.rawValue, bucket: bucket.text, tags: tags)
    }

    /// `LABELS name N field F agg A bucket B bucket_ms MS rollup A_B spillway aggregate host H`, then
    /// each tag (in tag order) whose name is not one of those.
    public func appendLabels(_ stream: StreamInfo, tags: [Tag], field: String, agg: Aggregation, bucket: AggregateConfig.Bucket, to c: inout RedisCommand) {
        c.append("LABELS")
        c.append("name"); c.append(stream.name)
        c.append("field"); c.append(field)
        c.append("agg"); c.append(agg.rawValue)
        c.append("bucket"); c.append(bucket.text)
        c.append("bucket_ms"); c.append(bucket.ms)
        c.append("rollup"); c.append("\(agg.rawValue)_\(bucket.text)")
        c.append("spillway"); c.append("aggregate")
        let host = host(stream, tags)
        if !tags.contains(where: { $0.key == "host" }), !host.isEmpty {
            c.append("host"); c.append(host)
        }
        for t in tags where !t.value.isEmpty {
            c.append(Self.reservedLabels.contains(t.key) ? "tag_" + t.key : t.key); c.append(t.value)
        }
    }
}
