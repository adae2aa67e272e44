import Synchronization

/// A series' labels: `name` (the record's measurement), `field`, `host` and the record's other
/// tags (RedisTimeSeries series also carry `rollup` when they are a rollup).
public typealias Labels = [String: String]

/// One label matcher, as PromQL has them: `label="v"`, `label!="v"`, `label=~"re"`, `label!~"re"`.
/// A label a series does not have matches as the empty string (so `host=""` selects series without
/// `host`, and `host!="web-1"` selects them too). Regular expressions are anchored at both ends
/// (`web-.*` does not match `xweb-1`), as in Prometheus.
public struct LabelMatcher: Sendable, Equatable, CustomStringConvertible {
    public enum Op: String, Sendable, CaseIterable {
        case equal = "="
        case notEqual = "!="
        case matchesRegex = "=~"
        case notMatchesRegex = "!~"
    }

    public let label: String
    public let op: Op
    public let value: String
    private let regex: SharedRegex?

    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public init(_ label: String, _ op: Op, _ value: String) throws(Invalid) {
        guard !label.isEmpty else { throw Invalid(description: "a matcher needs a label name before \(op.rawValue)") }
        self.label = label
        self.op = op
        self.value = value
        switch op {
        case .equal, .notEqual:
            regex = nil
        case .matchesRegex, .notMatchesRegex:
            do {
                regex = SharedRegex(try Regex(value))
            } catch {
                throw Invalid(description: "\(label)\(op.rawValue)\(value): not a regular expression (\(error))")
            }
        }
    }

    /// Parses `k=v`, `k!=v`, `k=~re` or `k!~re` (the label is what comes before the first `=` or
    /// `!`; the value is the rest, and may be empty).
    public static func parse(_ text: String) throws(Invalid) -> LabelMatcher {
        guard let cut = text.firstIndex(where: { $0 == "=" || $0 == "!" }) else {
            throw Invalid(description: "\"\(text)\" is not a matcher; write label=value, label!=value, label=~regex or label!~regex")
        }
        let label = String(text[..<cut])
        let rest = text[cut...]
        for op in [Op.notEqual, .matchesRegex, .notMatchesRegex, .equal] where rest.hasPrefix(op.rawValue) {
            return try LabelMatcher(label, op, String(rest.dropFirst(op.rawValue.count)))
        }
        throw Invalid(description: "\"\(text)\" is not a matcher; write label=value, label!=value, label=~regex or label!~regex")
    }

    /// Whether a label's value (nil: the series does not have it) passes.
    public func matches(_ actual: String?) -> Bool {
        let v = actual ?? ""
        switch op {
        case .equal: return v == value
        case .notEqual: return v != value
        case .matchesRegex: return regex!.wholeMatch(v)
        case .notMatchesRegex: return !regex!.wholeMatch(v)
        }
    }

    public var description: String { "\(label)\(op.rawValue)\(value)" }

    public static func == (a: LabelMatcher, b: LabelMatcher) -> Bool {
        a.label == b.label && a.op == b.op && a.value == b.value
    }

    /// The RedisTimeSeries filter expression with the same meaning, when there is one: `=` and `!=`
    /// (RedisTimeSeries too reads `label=` as "has no such label" and `label!=v` as true for series
    /// without it), with a value its filter syntax cannot misread (no list parentheses, commas,
    /// quotes or blanks). Regular expressions have none: they are applied to the labels read back.
    public var timeSeriesFilter: String? {
        guard op == .equal || op == .notEqual else { return nil }
        let unsafe: Set<Character> = ["(", ")", ",", "\"", "'", "=", "!", " ", "\t", "\n", "\r", "\\"]
        guard !label.contains(where: { unsafe.contains($0) }), !value.contains(where: { unsafe.contains($0) }) else { return nil }
        return "\(label)\(op.rawValue)\(value)"
    }
}

/// A compiled regular expression that matchers (and so selectors) shared between threads can use:
/// `Regex` is not `Sendable`, so it is used under a lock.
final class SharedRegex: Sendable {
    private let regex: Mutex<Regex<AnyRegexOutput>>

    init(_ regex: sending Regex<AnyRegexOutput>) { self.regex = Mutex(regex) }

    /// Whether the whole of `s` matches.
    func wholeMatch(_ s: String) -> Bool {
        regex.withLock { (try? $0.wholeMatch(in: s)) != nil }
    }
}

/// A series selector: every matcher must pass. `name` and `field` are labels like the others, so
/// `spillway query latest cpu --field usage_user` is the selector `name="cpu", field="usage_user"`
/// (and `cpu_usage_user{…}` in PromQL, once `serve` maps metric names to the two).
public struct Selector: Sendable, Equatable, CustomStringConvertible {
    public var matchers: [LabelMatcher]

    public init(_ matchers: [LabelMatcher] = []) { self.matchers = matchers }

    /// `name="name"`, `field="field"` (each when given), then `matchers`.
    public init(name: String?, field: String? = nil, _ matchers: [LabelMatcher] = []) {
        var all: [LabelMatcher] = []
        if let name { all.append(try! LabelMatcher("name", .equal, name)) }
        if let field { all.append(try! LabelMatcher("field", .equal, field)) }
        self.matchers = all + matchers
    }

    /// The metric name (PromQL's `NAME{…}`), when an `=` matcher on `__name__` gives it.
    public var metricName: String? { equality("__name__") }

    public func matches(_ labels: Labels) -> Bool {
        matchers.allSatisfy { $0.matches(labels[$0.label]) }
    }

    /// The value `label` must equal, when a matcher says so (the first such matcher).
    public func equality(_ label: String) -> String? {
        matchers.first { $0.label == label && $0.op == .equal }?.value
    }

    /// Whether some matcher is about `label`.
    public func mentions(_ label: String) -> Bool { matchers.contains { $0.label == label } }

    public var description: String {
        matchers.isEmpty ? "{}" : "{" + matchers.map { "\($0.label)\($0.op.rawValue)\"\($0.value)\"" }.joined(separator: ", ") + "}"
    }
}
