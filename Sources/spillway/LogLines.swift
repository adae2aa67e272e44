import ArgumentParser
import Foundation
import Logging
import SpillwayCore
import Synchronization

/// The log's line format, `[agent] log_format`; a reload may change it (the logging system itself
/// is set up once per process).
final class LogFormat: Sendable {
    enum Kind: String, Sendable { case text, logfmt, json }

    static let shared = LogFormat()
    private let kind = Mutex(Kind.text)

    var current: Kind {
        get { kind.withLock { $0 } }
        set { kind.withLock { $0 = newValue } }
    }
}

/// One event a line on stderr, written with one write(2) so lines of concurrent threads never mix:
/// - text:   `2026-12-01T06:06:03.123Z info starting agent.data_dir=/var/lib/spillway agent.host=web-1`
/// - logfmt: `ts=2026-12-01T06:06:03.123Z level=info msg=starting agent.data_dir=/var/lib/spillway`
/// - json:   `{"ts":"2026-12-01T06:06:03.123Z","level":"info","msg":"starting","agent.data_dir":"/var/lib/spillway"}`
/// Metadata keys are dotted by what they belong to (`input.name`, `redis.key`: the call sites name
/// them so; a value that is a dictionary is flattened the same way); in text and logfmt, values
/// with blanks, quotes, `=` or control characters are quoted and escaped; JSON strings are escaped
/// as RFC 8259 says.
struct LineLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    let format: LogFormat

    init(level: Logger.Level, format: LogFormat = .shared) {
        logLevel = level
        self.format = format
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let m = event.metadata { all.merge(m) { $1 } }
        let line = Self.line(format: format.current, time: Date(), level: event.level, message: "\(event.message)", metadata: all)
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        bytes.withUnsafeBytes { buf in
            var off = 0
            while off < buf.count {
                let n = write(2, buf.baseAddress! + off, buf.count - off)
                if n < 0 { if errno == EINTR { continue }; return }
                off += n
            }
        }
    }

    // MARK: formatting (static, for tests)

    static func line(format: LogFormat.Kind, time: Date, level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        let ts = timestamp(time)
        var fields: [(String, String)] = []
        flatten(metadata, prefix: "", into: &fields)
        fields.sort { $0.0 < $1.0 }
        switch format {
        case .text:
            var out = "\(ts) \(level.rawValue) \(textMessage(message))"
            for (k, v) in fields { out += " \(k)=\(logfmtValue(v))" }
            return out
        case .logfmt:
            var out = "ts=\(ts) level=\(level.rawValue) msg=\(logfmtValue(message))"
            for (k, v) in fields { out += " \(logfmtKey(k))=\(logfmtValue(v))" }
            return out
        case .json:
            var out = "{\"ts\":\(jsonString(ts)),\"level\":\(jsonString(level.rawValue)),\"msg\":\(jsonString(message))"
            for (k, v) in fields where !["ts", "level", "msg"].contains(k) { out += ",\(jsonString(k)):\(jsonString(v))" }
            return out + "}"
        }
    }

    static func flatten(_ m: Logger.Metadata, prefix: String, into out: inout [(String, String)]) {
        for (k, v) in m {
            let key = prefix.isEmpty ? k : "\(prefix).\(k)"
            switch v {
            case .dictionary(let d): flatten(d, prefix: key, into: &out)
            case .array(let a): out.append((key, "[" + a.map(\.description).joined(separator: ",") + "]"))
            case .string(let s): out.append((key, s))
            case .stringConvertible(let c): out.append((key, c.description))
            }
        }
    }

    /// RFC 3339 in UTC with milliseconds.
    static func timestamp(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var t = time_t(ms / 1000)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                      Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(ms % 1000))
    }

    /// A logfmt value: bare when it is a non-empty run of printable characters other than blanks,
    /// `"` and `=`; else quoted, with `\"`, `\\`, `\n`, `\r`, `\t` and `\u00XX` escapes.
    static func logfmtValue(_ v: String) -> String {
        let bare = !v.isEmpty && v.unicodeScalars.allSatisfy { $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0 != "\\" && $0.value != 0x7F }
        return bare ? v : quoted(v)
    }

    /// A key: the same rule, with anything outside it replaced by `_` (a key is never quoted).
    static func logfmtKey(_ k: String) -> String {
        String(String.UnicodeScalarView(k.unicodeScalars.map { $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0.value != 0x7F ? $0 : "_" }))
    }

    static func quoted(_ v: String) -> String { Quoting.quoted(v) }

    static func jsonString(_ v: String) -> String { quoted(v) }

    /// The message of a text line: as written, but with control characters escaped (a newline in a
    /// quoted path never starts another line).
    static func textMessage(_ m: String) -> String {
        guard m.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return m }
        return Quoting.escaped(m, quotes: false)
    }
}

/// `--log-level`, as `run`, `aggregate` and `serve` take it, and the logging they set up with it.
struct LogOptions: ParsableArguments {
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level \(logLevel): use trace, debug, info, notice, warning, error or critical")
        }
    }

    /// Lines on stderr (`LineLogHandler`) in `format` (`[agent] log_format`) at this level; once per
    /// process. Returns the logger.
    func bootstrap(format: String) -> Logger {
        LogFormat.shared.current = LogFormat.Kind(rawValue: format) ?? .text
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { _ in LineLogHandler(level: level) }
        return Logger(label: "spillway")
    }
}
