/// A string quoted for a log line or a message: `"…"` with `\"`, `\\`, `\n`, `\r`, `\t` and
/// `\u00XX` for other control characters (valid JSON and logfmt alike).
public enum Quoting {
    public static func quoted(_ v: String) -> String {
        "\"" + escaped(v) + "\""
    }

    /// The inside of `quoted(v)`; with `quotes: false`, `"` is left as it is (a text log message).
    public static func escaped(_ v: String, quotes: Bool = true) -> String {
        var out = ""
        for u in v.unicodeScalars {
            switch u {
            case "\"" where quotes: out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }
}
