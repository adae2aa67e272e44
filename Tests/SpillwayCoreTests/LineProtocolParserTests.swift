import Testing
@testable import SpillwayCore

@Suite struct LineProtocolParserTests {
    func parse(_ text: String, now: Int64 = 42) throws -> Record? {
        try LineProtocolParser.parse(Array(text.utf8), defaultTimestamp: now)
    }

    @Test func readsEveryValueType() throws {
        let r = try #require(try parse(#"cpu,host=a,dc=eu f=1.5,g=-2,i=-3i,u=7u,t=t,T=TRUE,fl=false,F=F,s="x y",e=1e3 1700000000000000000"#))
        #expect(r.name == "cpu")
        #expect(r.tags == [Tag("dc", "eu"), Tag("host", "a")])
        #expect(r.fields == [
            Field("f", .double(1.5)), Field("g", .double(-2)), Field("i", .int(-3)), Field("u", .uint(7)),
            Field("t", .bool(true)), Field("T", .bool(true)), Field("fl", .bool(false)), Field("F", .bool(false)),
            Field("s", .string("x y")), Field("e", .double(1000)),
        ])
        #expect(r.timestamp == 1_700_000_000_000_000_000)
    }

    @Test func withoutTimestampTakesTheDefault() throws {
        #expect(try parse("m v=1i", now: 99)?.timestamp == 99)
        #expect(try parse("m v=1i   ", now: 99)?.timestamp == 99)
        #expect(try parse("m v=1i -5")?.timestamp == -5)
    }

    @Test func unescapesEveryPart() throws {
        let r = try #require(try parse(#"my\ meas\,ure=x,b\ key=v\,a\=l\ ue f\ 1=1,s="say \"hi\" \\ bye",p="C:\path" 1"#))
        #expect(r.name == "my meas,ure=x")
        #expect(r.tags == [Tag("b key", "v,a=l ue")])
        #expect(r.fields == [Field("f 1", .double(1)), Field("s", .string(#"say "hi" \ bye"#)), Field("p", .string(#"C:\path"#))])
    }

    @Test func roundTripsTheEncoder() throws {
        let r = Record(
            name: "my meas,ure=x",
            tags: [Tag("b key", "v,a=l ue"), Tag("a", "x\ny\t")],
            fields: [Field("f 1", .double(1.25)), Field("i", .int(Int64.min)), Field("u", .uint(UInt64.max)), Field("b", .bool(true)),
                     Field("s", .string("say \"hi\" \\ bye\nnext")), Field("whole", .double(2))],
            timestamp: 1_700_000_000_000_000_001)
        let text = LineProtocol.encode([r])
        let (records, bad, _) = LineProtocolParser.parseLines(Array(text.utf8), defaultTimestamp: 0)
        #expect(bad.isEmpty)
        #expect(records == [r], "\(text)")
    }

    @Test func skipsBlankAndCommentLines() throws {
        #expect(try parse("") == nil)
        #expect(try parse("   ") == nil)
        #expect(try parse("# a comment") == nil)
        let (records, bad, _) = LineProtocolParser.parseLines(Array("a v=1\n\n# c\r\nb v=2\r\n".utf8), defaultTimestamp: 0)
        #expect(records.map(\.name) == ["a", "b"] && bad.isEmpty)
    }

    @Test func reportsWhatIsWrongAndWhere() {
        func error(_ text: String) -> LineProtocolError? {
            do throws(LineProtocolError) {
                _ = try LineProtocolParser.parse(Array(text.utf8), defaultTimestamp: 0)
                return nil
            } catch {
                return error
            }
        }
        #expect(error("m") == LineProtocolError("no fields (a space and key=value expected)", column: 2))
        #expect(error(",t=1 v=1") == LineProtocolError("empty measurement name", column: 1))
        #expect(error("m,t v=1")?.message == "tag \"t\" has no \"=\"")
        #expect(error("m,t= v=1")?.message == "tag \"t\" has an empty value")
        #expect(error("m v")?.message == "field \"v\" has no \"=\"")
        #expect(error("m v=")?.message == "field \"v\" has no value")
        #expect(error("m v=abc")?.message == "field \"v\": \"abc\" is not a number, boolean or quoted string")
        #expect(error("m v=nan")?.message == "field \"v\": \"nan\" is not a number, boolean or quoted string")
        #expect(error("m v=1.5i")?.message == "field \"v\": \"1.5i\" is not a 64-bit integer")
        #expect(error("m v=-1u")?.message == "field \"v\": \"-1u\" is not an unsigned 64-bit integer")
        #expect(error("m v=99999999999999999999i")?.message == "field \"v\": \"99999999999999999999i\" is not a 64-bit integer")
        #expect(error(#"m s="open"#)?.message == "string value of field \"s\" has no closing quote")
        #expect(error("m v=1 12ab")?.message == "timestamp \"12ab\" is not an integer (nanoseconds)")
        #expect(error("m v=1 1 2")?.message == "unexpected text after the timestamp")
        #expect(error("m v=1,")?.message == "empty field key")
        #expect(error("m v=1 12ab")?.column == 7)
    }

    @Test func aBadLineIsReportedAloneWithItsNumber() {
        let text = "a v=1\nnot a line\nb v=2\nc v=\"multi\nline\"\nd x\n"
        let (records, bad, _) = LineProtocolParser.parseLines(Array(text.utf8), defaultTimestamp: 7)
        #expect(records.map(\.name) == ["a", "b", "c"])
        #expect(records[2].field("v") == .string("multi\nline"))
        #expect(bad.map(\.line) == [2, 6])
        #expect(bad.map(\.text) == ["not a line", "d x"])
    }
}
