import Testing
@testable import SpillwayCore

@Suite struct LineProtocolTests {
    @Test func escapesEveryPart() {
        let r = Record(
            name: "my meas,ure=x",
            tags: [Tag("b key", "v,a=l ue"), Tag("a", "x\ny\t"), Tag("empty", "")],
            fields: [
                Field("f 1", .double(1.5)), Field("i", .int(-3)), Field("u", .uint(7)), Field("b", .bool(true)),
                Field("s", .string("say \"hi\" \\ bye")), Field("nan", .double(.nan)), Field("whole", .double(2)),
            ],
            timestamp: 1_700_000_000_000_000_000
        )
        #expect(LineProtocol.encode([r]) ==
            #"my\ meas\,ure=x,a=x\ny\t,b\ key=v\,a\=l\ ue f\ 1=1.5,i=-3i,u=7u,b=true,s="say \"hi\" \\ bye",whole=2 1700000000000000000"# + "\n")
    }

    @Test func recordWithoutWritableFieldsIsLeftOut() {
        let r = Record(name: "x", fields: [Field("a", .double(.infinity))], timestamp: 1)
        #expect(LineProtocol.encode([r]).isEmpty)
    }

    @Test func tagsAreSortedAndUnique() {
        var r = Record(name: "x", tags: [Tag("z", "1"), Tag("a", "2"), Tag("m", "3"), Tag("a", "4")], fields: [], timestamp: 0)
        #expect(r.tags.map(\.key) == ["a", "m", "z"])
        #expect(r.tag("a") == "4")
        r.addTagIfAbsent("a", "5")
        r.addTagIfAbsent("b", "6")
        #expect(r.tags == [Tag("a", "4"), Tag("b", "6"), Tag("m", "3"), Tag("z", "1")])
    }

    @Test func stableSortByNameThenTags() {
        var rs = [
            Record(name: "b", tags: [Tag("k", "1")], fields: [], timestamp: 0),
            Record(name: "a", tags: [Tag("k", "2")], fields: [], timestamp: 0),
            Record(name: "a", tags: [Tag("k", "10")], fields: [], timestamp: 0),
        ]
        LineProtocol.stableSort(&rs)
        #expect(rs.map { "\($0.name)\($0.tags[0].value)" } == ["a10", "a2", "b1"])
    }
}

@Suite struct GlobTests {
    @Test func matching() throws {
        #expect(try Glob("eth*").matches("eth0"))
        #expect(try !Glob("eth*").matches("veth0"))
        #expect(try Glob("sd[a-c]").matches("sdb"))
        #expect(try !Glob("sd[!a-c]").matches("sdb"))
        #expect(try Glob("sd[^a-c]").matches("sdd"))
        #expect(try Glob("nvme?n1").matches("nvme0n1"))
        #expect(try !Glob("/var/*").matches("/var/log/x"))
        #expect(try Glob("/var/**").matches("/var/log/x"))
        #expect(try Glob("/var/**/x.log").matches("/var/x.log"))
        #expect(try Glob("/var/**/x.log").matches("/var/a/b/x.log"))
        #expect(try Glob("a\\*b").matches("a*b"))
        #expect(try !Glob("a\\*b").matches("axb"))
        #expect(try Glob("[]]").matches("]"))
        #expect(try Glob("lo").isLiteral)
        #expect(try !Glob("l*").isLiteral)
    }

    @Test func malformedPatternsAreRejected() {
        #expect(throws: Glob.SyntaxError.self) { try Glob("eth[0") }
        #expect(throws: Glob.SyntaxError.self) { try Glob("x\\") }
        #expect(throws: Glob.SyntaxError.self) { try Glob("[z-a]") }
    }
}

@Suite struct UnitsTests {
    @Test func durations() {
        #expect(Units.parseDuration("500ms") == 500_000_000)
        #expect(Units.parseDuration("10s") == 10_000_000_000)
        #expect(Units.parseDuration("5m") == 300_000_000_000)
        #expect(Units.parseDuration("1h30m") == 5_400_000_000_000)
        #expect(Units.parseDuration("1.5s") == 1_500_000_000)
        #expect(Units.parseDuration("0") == 0)
        #expect(Units.parseDuration("250us") == 250_000)
        #expect(Units.parseDuration("10") == nil)
        #expect(Units.parseDuration("10 s") == nil)
        #expect(Units.parseDuration("-1s") == nil)
        #expect(Units.parseDuration("1y") == nil)
        #expect(Units.parseDuration("") == nil)
        #expect(Units.formatDuration(5_400_000_000_000) == "1h30m")
        #expect(Units.formatDuration(500_000_000) == "500ms")
    }

    @Test func sizes() {
        #expect(Units.parseSize("64KiB") == 65536)
        #expect(Units.parseSize("1GiB") == 1 << 30)
        #expect(Units.parseSize("8MiB") == 8 << 20)
        #expect(Units.parseSize("10MB") == 10_000_000)
        #expect(Units.parseSize("1024") == 1024)
        #expect(Units.parseSize("1.5KiB") == 1536)
        #expect(Units.parseSize("64XB") == nil)
        #expect(Units.parseSize("KiB") == nil)
        #expect(Units.parseSize("1.5") == nil)
    }

    @Test func didYouMean() {
        #expect(closestMatch(to: "percpuu", in: ["percpu", "totalcpu"]) == "percpu")
        #expect(closestMatch(to: "cpus", in: ["cpu", "mem", "disk"]) == "cpu")
        #expect(closestMatch(to: "dsik", in: ["cpu", "mem", "disk"]) == "disk")
        #expect(closestMatch(to: "intreval", in: ["interval", "jitter"]) == "interval")
        #expect(closestMatch(to: "zzzzzz", in: ["cpu", "mem"]) == nil)
    }
}

@Test func addTagsIfAbsentMergesWithRecordWinning() {
    var r = Record(name: "x", tags: [Tag("b", "own"), Tag("d", "own")], fields: [], timestamp: 0)
    r.addTagsIfAbsent([Tag("a", "def"), Tag("b", "def"), Tag("c", "def"), Tag("e", "def")])
    #expect(r.tags == [Tag("a", "def"), Tag("b", "own"), Tag("c", "def"), Tag("d", "own"), Tag("e", "def")])
    r.addTagsIfAbsent([])
    #expect(r.tags.count == 5)
}

@Suite struct Breaker {
    var s: CircuitBreaker.Settings {
        var s = CircuitBreaker.Settings()
        s.failureThreshold = 3
        s.openTimeout = 1_000
        s.maxOpenTimeout = 5_000
        return s
    }

    @Test func opensAfterThresholdAndRecovers() {
        var b = CircuitBreaker(settings: s, now: 0)
        let first = b.allowsAttempt(now: 0)
        #expect(first)
        b.recordFailure(now: 1, jitter: 0)
        b.recordFailure(now: 2, jitter: 0)
        #expect(b.state == .closed)
        b.recordSuccess(now: 3)               // a success resets the count
        b.recordFailure(now: 4, jitter: 0)
        b.recordFailure(now: 5, jitter: 0)
        #expect(b.state == .closed && b.consecutiveFailures == 2)
        b.recordFailure(now: 6, jitter: 0)
        #expect(b.state == .open && b.since == 6 && b.retryAt == 1_006)
        let early = b.allowsAttempt(now: 1_005)
        #expect(!early)  // no traffic while open
        let due = b.allowsAttempt(now: 1_006)
        #expect(due)
        #expect(b.state == .halfOpen && b.since == 1_006)
        #expect(b.outageSince == 6)
        b.recordSuccess(now: 1_010)
        #expect(b.state == .closed && b.since == 1_010 && b.consecutiveFailures == 0 && b.outageSince == nil)
    }

    @Test func backoffDoublesUpToTheMaximum() {
        var b = CircuitBreaker(settings: s, now: 0)
        for t in 0..<3 { b.recordFailure(now: Int64(t), jitter: 0) }
        var waits: [Int64] = []
        var now: Int64 = 2
        for _ in 0..<5 {
            waits.append(b.retryAt - now)
            now = b.retryAt
            let allowed = b.allowsAttempt(now: now)
            #expect(allowed)
            b.recordFailure(now: now, jitter: 0)   // the half-open probe fails: open again
        }
        #expect(waits == [1_000, 2_000, 4_000, 5_000, 5_000])
        #expect(b.outageSince == 2)   // the outage began at the first opening, whatever the probes did
        b.recordSuccess(now: now + 1)
        for t in 0..<3 { b.recordFailure(now: now + 2 + Int64(t), jitter: 0) }
        #expect(b.retryAt - (now + 4) == 1_000)  // a success resets the backoff
    }

    @Test func jitterStaysWithinTwentyPercentAndTheMaximum() {
        for jitter in [-1.0, -0.5, 0, 0.5, 1, 7] {
            var b = CircuitBreaker(settings: s, now: 0)
            for t in 0..<3 { b.recordFailure(now: Int64(t), jitter: jitter) }
            let wait = b.retryAt - 2
            #expect(wait >= 800 && wait <= 1_200, "\(jitter): \(wait)")
        }
        var b = CircuitBreaker(settings: s, now: 0)
        var now: Int64 = 0
        for t in 0..<3 { b.recordFailure(now: Int64(t), jitter: 1) }
        now = 2
        for _ in 0..<6 {
            now = b.retryAt
            _ = b.allowsAttempt(now: now)
            b.recordFailure(now: now, jitter: 1)
        }
        #expect(b.retryAt - now <= 5_000)
    }
}

@Test func inPlaceTagMergeMatchesANaiveMerge() {
    var rng = SystemRandomNumberGenerator()
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"]
    for _ in 0..<2000 {
        let own = keys.filter { _ in Bool.random(using: &rng) }.map { Tag($0, "own") }
        let defaults = keys.filter { _ in Bool.random(using: &rng) }.map { Tag($0, "def") }
        var r = Record(name: "x", tags: own, fields: [], timestamp: 0)
        r.addTagsIfAbsent(defaults)
        var naive: [String: String] = [:]
        for t in defaults { naive[t.key] = t.value }
        for t in own { naive[t.key] = t.value }
        #expect(r.tags == naive.keys.sorted().map { Tag($0, naive[$0]!) })
    }
}
