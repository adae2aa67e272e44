import SpillwayPromQL
import SpillwayCore

/// Key templates read backwards: the SCAN pattern of the keys a template makes, and the labels a
/// key holds.
extension KeyTemplate {
    /// The label a placeholder holds (`{host}` → host, `{name}` → name, `{tag.cpu}` → cpu,
    /// `{field}` → field), nil for a literal.
    static func label(of part: Part) -> String? {
        switch part {
        case .literal: nil
        case .host: "host"
        case .name: "name"
        case .field: "field"
        case .tag(let k): k
        }
    }

    /// A SCAN MATCH pattern for this template's keys: literals as they are (glob characters
    /// escaped), each placeholder the value `selector` requires of its label, else `*`; `suffix`
    /// (a pattern) after.
    func scanPattern(_ selector: Selector, suffix: String = "") -> String {
        var out = ""
        for part in parts {
            if case .literal(let bytes) = part {
                out += Self.escapeGlob(String(decoding: bytes, as: UTF8.self))
            } else if let label = Self.label(of: part), let value = selector.equality(label) {
                out += Self.escapeGlob(value)
            } else {
                out += "*"
            }
        }
        return out + suffix
    }

    static func escapeGlob(_ s: String) -> String {
        var out = ""
        for c in s {
            if c == "*" || c == "?" || c == "[" || c == "]" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out
    }

    /// The labels of the placeholders in `key` when it is this template's (a placeholder takes the
    /// shortest run that lets the rest match), else nil.
    func labels(of key: String) -> Labels? {
        let k = Array(key.utf8)
        var captures: [(String, Int, Int)] = []
        func match(_ p: Int, _ i: Int) -> Bool {
            if p == parts.count { return i == k.count }
            switch parts[p] {
            case .literal(let l):
                guard i + l.count <= k.count, k[i..<(i + l.count)].elementsEqual(l) else { return false }
                return match(p + 1, i + l.count)
            default:
                let label = Self.label(of: parts[p]) ?? ""
                for end in i...k.count {
                    captures.append((label, i, end))
                    if match(p + 1, end) { return true }
                    captures.removeLast()
                }
                return false
            }
        }
        guard match(0, 0) else { return nil }
        var labels: Labels = [:]
        for (label, from, to) in captures where labels[label] == nil {
            labels[label] = String(decoding: k[from..<to], as: UTF8.self)
        }
        return labels
    }
}
