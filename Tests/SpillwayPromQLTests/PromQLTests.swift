import SpillwayPromQL
import Testing

private func sel(_ matchers: [(String, LabelMatcher.Op, String)]) throws -> Selector {
    Selector(try matchers.map { try LabelMatcher($0.0, $0.1, $0.2) })
}

private func refused(_ q: String) -> ParseError? {
    do {
        _ = try PromQL.parse(q)
        return nil
    } catch {
        return error
    }
}

@Suite struct Parsing {
    @Test func selectors() throws {
        #expect(try PromQL.parse("cpu_usage_user") == .selector(sel([("__name__", .equal, "cpu_usage_user")])))
        #expect(try PromQL.parse(#" cpu_usage_user{host="web-1", cpu="cpu-total"} "#)
            == .selector(sel([("__name__", .equal, "cpu_usage_user"), ("host", .equal, "web-1"), ("cpu", .equal, "cpu-total")])))
        #expect(try PromQL.parse(#"mem_used{host!='a',path=~"/var/.*",device!~`sd[ab]`,}"#)
            == .selector(sel([("__name__", .equal, "mem_used"), ("host", .notEqual, "a"), ("path", .matchesRegex, "/var/.*"), ("device", .notMatchesRegex, "sd[ab]")])))
        // Grafana's metric browser.
        let e = try PromQL.parse(#"{__name__=~"cpu_.*"}"#)
        guard case .selector(let s) = e else { Issue.record("\(e)"); return }
        #expect(s.metricName == nil)
        #expect(s.matches(["__name__": "cpu_usage_user"]))
        #expect(!s.matches(["__name__": "mem_used"]))
        #expect(try PromQL.parse(#"x{a="q\"uote\\d"}"#) == .selector(sel([("__name__", .equal, "x"), ("a", .equal, #"q"uote\d"#)])))
    }

    @Test func matchingFollowsPrometheus() throws {
        let s = try sel([("__name__", .equal, "cpu_usage_user"), ("cpu", .matchesRegex, "cpu[0-9]+"), ("host", .notEqual, "b"), ("zone", .equal, "")])
        let labels = ["__name__": "cpu_usage_user", "cpu": "cpu12", "host": "a"]
        #expect(s.matches(labels))
        // Regexes are anchored at both ends.
        #expect(!s.matches(["__name__": "cpu_usage_user", "cpu": "xcpu1", "host": "a"]))
        #expect(!s.matches(["__name__": "cpu_usage_user", "cpu": "cpu1x", "host": "a"]))
        // An absent label is empty: `zone=""` selects series without it, `host!="b"` those without host.
        #expect(!s.matches(["__name__": "cpu_usage_user", "cpu": "cpu1", "zone": "eu"]))
        #expect(s.matches(["__name__": "cpu_usage_user", "cpu": "cpu1"]))
        #expect(!s.matches(["__name__": "cpu_usage_user", "cpu": "cpu1", "host": "b"]))
        #expect(try !LabelMatcher("a", .notMatchesRegex, "x|y").matches("y"))
        #expect(try LabelMatcher("a", .notMatchesRegex, "x|y").matches("xy"))
    }

    @Test func rangeFunctionsAndAggregations() throws {
        let cpu = try sel([("__name__", .equal, "cpu_usage_user")])
        for f in RangeFunction.allCases {
            #expect(try PromQL.parse("\(f.rawValue)(cpu_usage_user[5m])") == .rangeFunction(f, cpu, milliseconds: 300_000))
        }
        // As Grafana sends them: $__rate_interval and $__interval expanded.
        #expect(try PromQL.parse("rate(cpu_usage_user[1m0s])") == .rangeFunction(.rate, cpu, milliseconds: 60_000))
        #expect(try PromQL.parse("increase(cpu_usage_user [1h30m])") == .rangeFunction(.increase, cpu, milliseconds: 5_400_000))
        #expect(try PromQL.parse("sum by (host) (avg_over_time(cpu_usage_user[5m]))")
            == .aggregation(.sum, by: ["host"], .rangeFunction(.avgOverTime, cpu, milliseconds: 300_000)))
        #expect(try PromQL.parse("avg(cpu_usage_user) by (host, cpu)") == .aggregation(.avg, by: ["host", "cpu"], .selector(cpu)))
        #expect(try PromQL.parse("max(cpu_usage_user)") == .aggregation(.max, by: nil, .selector(cpu)))
        #expect(try PromQL.parse("count by () (cpu_usage_user)") == .aggregation(.count, by: [], .selector(cpu)))
        #expect(try PromQL.parse("min by (host) (max by (host, cpu) (cpu_usage_user))")
            == .aggregation(.min, by: ["host"], .aggregation(.max, by: ["host", "cpu"], .selector(cpu))))
        #expect(try PromQL.parse("(cpu_usage_user)") == .selector(cpu))
    }

    @Test func numbers() throws {
        // Grafana's "Save & test".
        #expect(try PromQL.parse("1+1").constant == 2)
        #expect(try PromQL.parse("2 * (3 - 1) ^ 2 / 4").constant == 2)
        #expect(try PromQL.parse("-1.5e3").constant == -1500)
        #expect(try PromQL.parse("0x10 % 5").constant == 1)
        #expect(try PromQL.parse("Inf").constant == .infinity)
        // As Prometheus: a sign binds looser than ^, which is right-associative.
        #expect(try PromQL.parse("-2^2").constant == -4)
        #expect(try PromQL.parse("2^-1").constant == 0.5)
        #expect(try PromQL.parse("2^3^2").constant == 512)
        #expect(try PromQL.parse("-(2)^2").constant == -4)
    }

    @Test func durations() {
        #expect(PromQL.duration("500ms") == 500)
        #expect(PromQL.duration("1h30m") == 5_400_000)
        #expect(PromQL.duration("15") == 15_000)
        #expect(PromQL.duration("1.5") == 1500)
        #expect(PromQL.duration("2d") == 172_800_000)
        #expect(PromQL.duration("5x") == nil)
        #expect(PromQL.duration("0s") == nil)
        #expect(PromQL.duration("") == nil)
        #expect(PromQL.duration("99999999999999999999y") == nil)
    }

    @Test func outsideTheSubsetIsNamed() {
        let cases: [(String, String)] = [
            ("histogram_quantile(0.9, x)", "function \"histogram_quantile\" is not supported"),
            ("cpu_usage_user offset 5m", "offset modifier is not supported"),
            ("cpu_usage_user @ 1700000000", "@ modifier is not supported"),
            ("cpu_usage_user[5m]", "range vector"),
            ("rate(cpu_usage_user[5m:1m])", "subqueries"),
            ("rate(cpu_usage_user)", "takes a selector with a range"),
            ("cpu_usage_user / mem_used", "only supported between numbers"),
            ("cpu_usage_user > 5", "comparison operator"),
            ("sum without (cpu) (cpu_usage_user)", "\"without\" is not supported"),
            ("topk(3, cpu_usage_user)", "aggregation \"topk\" is not supported"),
            ("a and b", "\"and\" is not supported"),
            (#"{host=""}"#, "needs a metric name"),
            (#"x{a=~"("}"#, "invalid regular expression"),
            (#"x{a="b"#, "unterminated string"),
            ("x{a}", "where =, !=, =~ or !~ was expected"),
            ("rate(x[5q])", "unknown duration unit"),
            ("5m", "only valid in a range"),
            ("sum(1)", "takes a selector"),
            ("", "unexpected end"),
            ("x y", "unexpected \"y\""),
            (String(repeating: "(", count: 40) + "x" + String(repeating: ")", count: 40), "nests deeper than 32"),
            (String(repeating: "-", count: 10_000) + "1", "nests deeper than 32"),
            (String(repeating: "2^", count: 5_000) + "1", "nests deeper than 32"),
            (String(repeating: "a", count: 20_000), "longer than 16384 bytes"),
        ]
        for (q, want) in cases {
            let e = refused(q)
            #expect(e?.message.contains(want) == true, "\(q): \(String(describing: e))")
        }
        #expect(refused("rate(x[5q])")?.position == 8)
        #expect(refused("rate(x[0s])")?.message == "a range must be longer than 0")
    }
}
