import SpillwayPromQL
import Foundation
import SpillwayQuery

/// How `spillway query` prints: an aligned table, JSON or CSV. One row per series (`series`), per
/// series' newest sample (`latest`) or per series' bucket (`range`); the labels other than name and
/// field are columns of their own, one per label any row has (sorted), so rows line up.
enum QueryOutput {
    enum Format { case table, json, csv }

    // MARK: - Commands

    static func series(_ series: [SeriesInfo], _ format: Format) -> String {
        let labelKeys = tagKeys(series)
        switch format {
        case .json:
            return "[" + series.map { s in "\n  {" + head(s) + ", \"key\": \(json(s.key))}" }.joined(separator: ",") + "\n]\n"
        case .table, .csv:
            var rows = [["name", "field"] + labelKeys + ["key"]]
            for s in series { rows.append([s.name ?? "", s.field ?? ""] + labelKeys.map { s.labels[$0] ?? "" } + [s.key]) }
            return format == .csv ? csv(rows) : table(rows)
        }
    }

    static func latest(_ samples: [LatestSample], _ format: Format) -> String {
        let labelKeys = tagKeys(samples.map(\.series))
        switch format {
        case .json:
            return "[" + samples.map { s in
                "\n  {" + head(s.series) + ", \"key\": \(json(s.series.key)), \"timestamp\": \(s.timestamp), \"time\": \(json(QueryTime.format(s.timestamp))), \"value\": \(json(s.value))}"
            }.joined(separator: ",") + "\n]\n"
        case .table, .csv:
            var rows = [["name", "field"] + labelKeys + [format == .csv ? "timestamp" : "time", "value"]]
            for s in samples {
                rows.append([s.series.name ?? "", s.series.field ?? ""] + labelKeys.map { s.series.labels[$0] ?? "" }
                            + [format == .csv ? String(s.timestamp) : QueryTime.format(s.timestamp), text(s.value)])
            }
            return format == .csv ? csv(rows) : table(rows)
        }
    }

    static func range(_ result: RangeResult, _ format: Format) -> String {
        let labelKeys = tagKeys(result.series.map(\.series))
        let q = result.query
        switch format {
        case .json:
            var out = "{\"from\": \(q.firstBucket), \"to\": \(q.lastBucket), \"step\": \(q.step), \"aggregation\": \(json(q.aggregation.rawValue)), \"series\": ["
            out += result.series.map { s in
                "\n  {" + head(s.series) + ", \"key\": \(json(s.series.key)), \"source\": \(json(s.sourceKey)), \"rollup\": \(s.rollup.map(json) ?? "null"), \"stream_from\": \(s.streamFrom.map(String.init) ?? "null"), \"points\": ["
                    + s.points.map { "[\($0.timestamp), \(json(.number($0.value)))]" }.joined(separator: ", ") + "]}"
            }.joined(separator: ",")
            return out + (result.series.isEmpty ? "]}\n" : "\n]}\n")
        case .table, .csv:
            var rows = [["name", "field"] + labelKeys + [format == .csv ? "timestamp" : "time", "value"]]
            for s in result.series {
                let prefix = [s.series.name ?? "", s.series.field ?? ""] + labelKeys.map { s.series.labels[$0] ?? "" }
                for p in s.points {
                    rows.append(prefix + [format == .csv ? String(p.timestamp) : QueryTime.format(p.timestamp), number(p.value)])
                }
            }
            return format == .csv ? csv(rows) : table(rows)
        }
    }

    // MARK: - Pieces

    /// Every label key but name and field that some series has, sorted.
    static func tagKeys(_ series: [SeriesInfo]) -> [String] {
        Set(series.flatMap(\.labels.keys)).subtracting(["name", "field"]).sorted()
    }

    /// `"name": …, "field": …, "labels": {…}` (labels: all but name and field, sorted).
    static func head(_ s: SeriesInfo) -> String {
        let labels = s.labels.filter { $0.key != "name" && $0.key != "field" }.sorted { $0.key < $1.key }
        return "\"name\": \(s.name.map(json) ?? "null"), \"field\": \(s.field.map(json) ?? "null"), \"labels\": {"
            + labels.map { "\(json($0.key)): \(json($0.value))" }.joined(separator: ", ") + "}"
    }

    /// A number as printed: integers without a fraction, others in Swift's shortest exact form;
    /// NaN, +Inf, -Inf as Prometheus writes them.
    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    static func text(_ v: SampleValue) -> String {
        switch v {
        case .number(let d): number(d)
        case .text(let s): s
        }
    }

    /// A value in JSON: a number (NaN and infinities, which JSON lacks, as strings), or a string.
    static func json(_ v: SampleValue) -> String {
        switch v {
        case .number(let d): d.isFinite ? number(d) : json(number(d))
        case .text(let s): json(s)
        }
    }

    /// A string in JSON, quoted and escaped (the same escaping as `serve`'s answers).
    static func json(_ s: String) -> String {
        var out = ""
        PrometheusAPI.string(s, into: &out)
        return out
    }

    /// RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled.
    static func csv(_ rows: [[String]]) -> String {
        rows.map { row in
            row.map { f in
                f.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                    ? "\"" + f.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : f
            }.joined(separator: ",")
        }.joined(separator: "\n") + "\n"
    }

    /// Columns padded to their widest cell, two spaces apart, the header upper-cased; an empty cell
    /// is `-`, and control characters in a cell are escaped (`\n`, `\t`) so a row stays one line.
    static func table(_ rows: [[String]]) -> String {
        guard let header = rows.first else { return "" }
        let cells = [header.map { $0.uppercased() }] + rows.dropFirst().map { row in
            row.map { c in
                c.isEmpty ? "-" : c.unicodeScalars.contains(where: { $0.value < 0x20 })
                    ? c.replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\t", with: "\\t").replacingOccurrences(of: "\r", with: "\\r")
                    : c
            }
        }
        var widths = Array(repeating: 0, count: header.count)
        for row in cells { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
        return cells.map { row in
            var line = ""
            for (i, c) in row.enumerated() {
                line += c
                if i < row.count - 1 { line += String(repeating: " ", count: widths[i] - c.count + 2) }
            }
            return line
        }.joined(separator: "\n") + "\n"
    }
}
