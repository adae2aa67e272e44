import Foundation
import SpillwayCore

/// `[outputs.redis]`.
public struct RedisOutputConfig: Sendable, Equatable {
    public enum Format: String, Sendable { case stream, timeseries }
    public enum IDs: String, Sendable { case explicit, auto }

    /// A `rollups` entry, `"avg:1m:1d"`: aggregation, bucket, retention of the compacted series.
    public struct Rollup: Sendable, Equatable {
        public static let aggregations = ["avg", "sum", "min", "max", "range", "count", "first", "last",
                                          "std.p", "std.s", "var.p", "var.s", "twa"]
        public var aggregation: String
        public var bucketMs: Int64
        public var retentionMs: Int64
        /// The text of the bucket, as written (`1m`), used in the compacted series' key.
        public var bucketText: String

        public static func parse(_ s: String) -> Rollup? {
            let parts = s.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3, aggregations.contains(parts[0]),
                  let bucket = Units.parseDuration(parts[1]), bucket >= 1_000_000,
                  let retention = Units.parseDuration(parts[2]) else { return nil }
            return Rollup(aggregation: parts[0], bucketMs: bucket / 1_000_000, retentionMs: retention / 1_000_000, bucketText: parts[1])
        }
    }

    public var endpoint: RedisEndpoint
    /// The url as written, password redacted (for logs and `check`).
    public var urlDisplay: String
    public var connectTimeout: Int64 = 2_000_000_000
    public var timeout: Int64 = 5_000_000_000
    public var keepalive = true
    /// TLS settings (`rediss://` urls only; nil otherwise).
    public var tls: RedisTLSOptions?
    /// Where the TLS files are set (the client certificate's key, else the CA file, else the url),
    /// for `check`'s problem when they cannot work together.
    public var tlsLocation: Diagnostic?
    public var format: Format = .stream
    public var key: KeyTemplate
    public var maxlen: Int = 100_000
    /// Trim streams by age with `MINID ~` instead of `MAXLEN ~`, nanoseconds.
    public var maxAge: Int64?
    public var ids: IDs = .explicit
    /// Timeseries retention, milliseconds (0 = keep forever).
    public var retentionMs: Int64 = 0
    public var rollups: [Rollup] = []

    public static let defaultURL = "redis://127.0.0.1:6379/0"
    public static let defaultStreamKey = "metrics:{host}:{name}"
    public static let defaultSeriesKey = "ts:{host}:{name}:{field}"

    public init() {
        endpoint = try! RedisEndpoint.parse(Self.defaultURL)
        urlDisplay = Self.defaultURL
        key = try! KeyTemplate(Self.defaultStreamKey)
    }

    /// Reads `[outputs.redis]`.
    static func read(_ r: inout OptionReader, baseDirectory: String) -> RedisOutputConfig {
        var out = RedisOutputConfig()
        let url = r.string("url", default: defaultURL)
        do {
            out.endpoint = try RedisEndpoint.parse(url)
            out.urlDisplay = RedisEndpoint.redacted(url)
        } catch {
            r.errorWithFix("url", error.description)
        }
        if let user = r.optionalString("username") { out.endpoint.username = user }
        let password = r.optionalString("password")
        if let password { out.endpoint.password = Secret(password) }
        if let file = r.optionalString("password_file") {
            if password != nil {
                r.error("password_file", "both password and password_file are set", fix: "keep one of them")
            }
            let path = ConfigPaths.resolve(file, against: baseDirectory)
            if let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) {
                // The first line (blank lines around it left out); a file of nothing but newlines is empty.
                let trimmed = text.trimmingCharacters(in: .newlines)
                let line = trimmed.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }).first.map(String.init) ?? ""
                if line.isEmpty {
                    r.warning("password_file", "\"\(path)\" is empty: the agent connects without AUTH",
                              fix: "write the password on its first line, or remove password_file")
                } else {
                    out.endpoint.password = Secret(line)
                }
            } else {
                r.error("password_file", "cannot read \"\(path)\"", fix: "check that the file exists and the agent may read it")
            }
        }
        out.connectTimeout = r.duration("connect_timeout", default: out.connectTimeout, minimum: 1_000_000)
        out.timeout = r.duration("timeout", default: out.timeout, minimum: 1_000_000)
        out.keepalive = r.bool("keepalive", default: true)
        readTLS(&r, into: &out, baseDirectory: baseDirectory)
        let format = r.string("format", default: "stream")
        if let f = Format(rawValue: format) { out.format = f } else {
            r.error("format", "unknown format \"\(format)\"", fix: "use \"stream\" or \"timeseries\"")
        }
        out.key = keyTemplate(&r, "key", format: out.format) ?? out.key
        if out.format == .timeseries, !r.has("key") { out.key = try! KeyTemplate(defaultSeriesKey, allowField: true) }
        out.maxlen = r.int("maxlen", default: out.maxlen, range: 0...Int(Int32.max))
        out.maxAge = r.optionalDuration("max_age", minimum: 1_000_000)
        if out.maxAge != nil, r.has("maxlen") {
            r.error("max_age", "maxlen and max_age are both set; a stream is trimmed by one of them",
                    fix: "keep maxlen (MAXLEN ~ N) or max_age (MINID ~ now - age)")
        }
        let ids = r.string("ids", default: "explicit")
        if let i = IDs(rawValue: ids) { out.ids = i } else {
            r.error("ids", "unknown ids \"\(ids)\"", fix: "use \"explicit\" or \"auto\"")
        }
        out.retentionMs = r.duration("retention", default: 0) / 1_000_000
        for text in r.stringArray("rollups", default: []) {
            if let rollup = Rollup.parse(text) { out.rollups.append(rollup) } else {
                r.error("rollups", "\"\(text)\" is not a rollup",
                        fix: "write AGGREGATION:BUCKET:RETENTION, e.g. \"avg:1m:1d\"; aggregations: \(Rollup.aggregations.joined(separator: ", "))")
            }
        }
        if out.format == .stream {
            for key in ["retention", "rollups"] where r.has(key) {
                r.error(key, "\(key) applies to format = \"timeseries\" only", fix: "remove it, or set format = \"timeseries\"")
            }
        }
        return out
    }

    static let tlsKeys = ["tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name", "tls_insecure_skip_verify"]

    /// The tls_* keys: with a `rediss://` url only; files resolved against the config's directory
    /// and checked readable; a client certificate and its key together.
    static func readTLS(_ r: inout OptionReader, into out: inout RedisOutputConfig, baseDirectory: String) {
        guard out.endpoint.tls else {
            for key in tlsKeys where r.has(key) {
                r.error(key, "\(key) applies to TLS connections only", fix: "use a rediss:// url, or remove it")
            }
            return
        }
        var tls = RedisTLSOptions()
        /// The file's path; it must be readable and hold a PEM block of `kind` (so that a key given
        /// as the CA, or the other way round, is found by `check`, not at the first connection).
        func file(_ key: String, holding kind: String, _ what: String) -> String? {
            guard let text = r.optionalString(key) else { return nil }
            let path = ConfigPaths.resolve(text, against: baseDirectory)
            guard let data = FileManager.default.contents(atPath: path) else {
                r.error(key, "cannot read \"\(path)\"", fix: "check that the file exists and the agent may read it")
                return path
            }
            if data.count > 16 << 20 || !String(decoding: data, as: UTF8.self).contains(kind) {
                r.error(key, "\"\(path)\" holds no PEM \(what) (no \"\(kind)\" line)", fix: "name the PEM file of the \(what)")
            }
            return path
        }
        tls.caFile = file("tls_ca_file", holding: "-----BEGIN CERTIFICATE-----", "CA certificate")
        tls.certFile = file("tls_cert_file", holding: "-----BEGIN CERTIFICATE-----", "client certificate")
        tls.keyFile = file("tls_key_file", holding: "PRIVATE KEY-----", "private key")
        if (tls.certFile == nil) != (tls.keyFile == nil) {
            r.error(tls.certFile == nil ? "tls_key_file" : "tls_cert_file", "a client certificate needs its key and a key its certificate",
                    fix: "set both tls_cert_file and tls_key_file, or neither")
        }
        tls.serverName = r.optionalString("tls_server_name")
        if tls.serverName?.isEmpty == true {
            r.error("tls_server_name", "the server name is empty", fix: "write the name the server's certificate holds, or remove it")
        }
        tls.insecureSkipVerify = r.bool("tls_insecure_skip_verify", default: false)
        if tls.insecureSkipVerify {
            r.warning("tls_insecure_skip_verify", "the server's certificate is not checked: anyone on the path can read and change what is sent",
                      fix: "set tls_ca_file to the CA that signed the server's certificate, and remove this")
        }
        out.tls = tls
        out.tlsLocation = r.location(["tls_key_file", "tls_cert_file", "tls_ca_file", "url"].first { r.has($0) } ?? "url")
    }

    /// Reads a key template option, checked for the format's placeholders.
    static func keyTemplate(_ r: inout OptionReader, _ key: String, format: Format) -> KeyTemplate? {
        guard let text = r.optionalString(key) else { return nil }
        do {
            return try KeyTemplate(text, allowField: format == .timeseries)
        } catch {
            r.errorWithFix(key, error.description)
            return nil
        }
    }
}

extension OptionReader {
    /// Reports "reason; fix" texts (URL and template errors) with the fix in its own place.
    func errorWithFix(_ key: String, _ text: String) {
        if let cut = text.range(of: "; ") {
            error(key, String(text[..<cut.lowerBound]), fix: String(text[cut.upperBound...]))
        } else {
            error(key, text)
        }
    }
}
