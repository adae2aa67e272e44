import SpillwayCore
@testable import SpillwayInputs
import Testing

@Suite struct TailParsing {
    func parse(_ p: LineParser, _ line: String, truncated: Bool = false) -> Record {
        p.parse(Array(line.utf8)[...], truncated: truncated, now: 42)
    }

    @Test func rawKeepsTheLine() {
        let r = parse(LineParser(), "hello world \u{e9}")
        #expect(r.name == "log" && r.timestamp == 42)
        #expect(r.fields == [Field("message", .string("hello world \u{e9}"))])
        let t = parse(LineParser(name: "app"), "cut", truncated: true)
        #expect(t.name == "app" && t.fields == [Field("message", .string("cut")), Field("truncated", .bool(true))])
    }

    @Test func jsonFlattensAndTypes() {
        let p = LineParser(format: .json, tagKeys: ["tenant"])
        let r = parse(p, #"{"tenant":"acme","score":0.93,"n":17,"big":18446744073709551615,"ok":true,"gone":null,"m":{"a":{"b":"x"}},"list":[1,"two"],"s":"q\"\u00e9\n\ud83d\ude00"}"#)
        #expect(r.tags == [Tag("tenant", "acme")])
        #expect(r.fields == [
            Field("score", .double(0.93)), Field("n", .int(17)), Field("big", .uint(18446744073709551615)), Field("ok", .bool(true)),
            Field("m.a.b", .string("x")), Field("list.0", .int(1)), Field("list.1", .string("two")),
            Field("s", .string("q\"\u{e9}\n\u{1F600}")),
        ])
    }

    @Test func badJSONIsKeptRawWithParseError() {
        let p = LineParser(format: .json)
        for line in [#"{"a":1"#, "[1,2]", "not json", #"{"a":1} trailing"#, #"{"a":"\ud800"}"#, #"{"a":01x}"#, String(repeating: "[", count: 100)] {
            let r = parse(p, line)
            #expect(r.fields == [Field("message", .string(line)), Field("parse_error", .bool(true))], "\(line)")
        }
        // Deep nesting is refused, not a stack overflow.
        let deep = String(repeating: #"{"a":"#, count: 5000) + "1" + String(repeating: "}", count: 5000)
        #expect(parse(p, deep).field("parse_error") == .bool(true))
    }

    @Test func logfmt() {
        let p = LineParser(format: .logfmt, tagKeys: ["level"])
        let r = parse(p, #"level=warn msg="disk \"almost\" full" used=0.97 count=3 debug empty= path=/var/x"#)
        #expect(r.tags == [Tag("level", "warn")])
        #expect(r.fields == [
            Field("msg", .string(#"disk "almost" full"#)), Field("used", .double(0.97)), Field("count", .int(3)),
            Field("debug", .bool(true)), Field("empty", .string("")), Field("path", .string("/var/x")),
        ])
        for bad in [#"a="unclosed"#, "=x", #"a=b"c"#] {
            #expect(parse(p, bad).field("parse_error") == .bool(true), "\(bad)")
        }
    }

    @Test func timestamps() {
        func ns(_ f: String, _ v: FieldValue) -> Int64? { TimestampFormat.parse(f).format?.nanoseconds(v) }
        #expect(ns("unix", .int(1_700_000_000)) == 1_700_000_000_000_000_000)
        #expect(ns("unix", .double(1_700_000_000.5)) == 1_700_000_000_500_000_000)
        #expect(ns("unix", .string("1700000000")) == 1_700_000_000_000_000_000)
        #expect(ns("unix_ms", .int(1_700_000_000_123)) == 1_700_000_000_123_000_000)
        #expect(ns("unix_us", .int(1_700_000_000_123_456)) == 1_700_000_000_123_456_000)
        #expect(ns("unix_ns", .int(5)) == 5)
        #expect(ns("rfc3339", .string("2023-11-14T22:13:20Z")) == 1_700_000_000_000_000_000)
        #expect(ns("rfc3339", .string("2023-11-14T23:13:20.25+01:00")) == 1_700_000_000_250_000_000)
        #expect(ns("rfc3339", .string("2023-11-14 22:13:20.123456789Z")) == 1_700_000_000_123_456_789)
        #expect(ns("rfc3339", .string("2023-11-14T22:13:20")) == nil)  // no zone
        #expect(ns("rfc3339", .string("2023-13-14T22:13:20Z")) == nil)
        #expect(ns("%Y-%m-%d %H:%M:%S", .string("2023-11-14 22:13:20")) == 1_700_000_000_000_000_000)
        #expect(ns("%d/%b/%Y:%H:%M:%S %z", .string("14/Nov/2023:17:13:20 -0500")) == 1_700_000_000_000_000_000)
        #expect(ns("%F %T.%f", .string("2023-11-14 22:13:20.5")) == 1_700_000_000_500_000_000)
        #expect(ns("%b %e %I:%M:%S %p %Y", .string("Nov 14 10:13:20 PM 2023")) == 1_700_000_000_000_000_000)
        #expect(ns("%s", .string("1700000000")) == 1_700_000_000_000_000_000)
        #expect(ns("%Y-%m-%d", .string("2023-11-14x")) == nil)
        #expect(TimestampFormat.parse("%Q").format == nil && TimestampFormat.parse("nonsense").format == nil)

        let p = LineParser(format: .json, timestampKey: "ts", timestampFormat: .unixMs)
        let r = parse(p, #"{"ts":1700000000123,"v":1}"#)
        #expect(r.timestamp == 1_700_000_000_123_000_000 && r.fields == [Field("v", .int(1))])
        // A time that does not parse: the line is kept raw.
        let bad = parse(p, #"{"ts":"soon","v":1}"#)
        #expect(bad.timestamp == 42 && bad.field("parse_error") == .bool(true) && bad.field("message") == .string(#"{"ts":"soon","v":1}"#))
    }
}
