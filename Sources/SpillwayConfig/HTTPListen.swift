/// `[agent] http_listen`: the address `/health` and `/metrics` are served on. Loopback unless
/// another address is written: `":9469"` and `"9469"` mean 127.0.0.1.
public struct HTTPListen: Sendable, Equatable, CustomStringConvertible {
    /// An IPv4 literal, or an IPv6 literal (without brackets) when `isIPv6`.
    public var host: String
    public var port: UInt16
    public var isIPv6: Bool

    public init(host: String, port: UInt16, isIPv6: Bool = false) {
        self.host = host
        self.port = port
        self.isIPv6 = isIPv6
    }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether only this host can connect.
    public var isLoopback: Bool { isIPv6 ? host == "::1" : host.hasPrefix("127.") }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT`; `localhost` is 127.0.0.1. Host names are not
    /// resolved: the agent listens on an address, not a name.
    public static func parse(_ text: String) -> Result<HTTPListen, ParseError> {
        let t = text.trimmingCharactersInSpaces()
        var host = "127.0.0.1"
        var portText = Substring(t)
        var v6 = false
        if t.hasPrefix("[") {
            guard let close = t.firstIndex(of: "]"), t[t.index(after: close)...].hasPrefix(":") else {
                return .failure(ParseError(description: "\"\(text)\" is not [IPV6]:PORT"))
            }
            host = String(t[t.index(after: t.startIndex)..<close])
            portText = t[t.index(close, offsetBy: 2)...]
            v6 = true
            guard isIPv6Literal(host) else { return .failure(ParseError(description: "\"\(host)\" is not an IPv6 address")) }
        } else if let colon = t.lastIndex(of: ":") {
            let h = String(t[..<colon])
            portText = t[t.index(after: colon)...]
            if h == "localhost" {
                host = "127.0.0.1"
            } else if !h.isEmpty {
                guard isIPv4Literal(h) else {
                    return .failure(ParseError(description: "\"\(h)\" is not an IPv4 address (host names are not resolved)"))
                }
                host = h
            }
        }
        guard let port = UInt16(portText), port > 0 else {
            return .failure(ParseError(description: "\"\(portText)\" is not a port (1-65535)"))
        }
        return .success(HTTPListen(host: host, port: port, isIPv6: v6))
    }

    static func isIPv4Literal(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in
            !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCIIDigit) && (Int(p) ?? 256) <= 255
        }
    }

    static func isIPv6Literal(_ s: String) -> Bool {
        !s.isEmpty && s.contains(":") && s.allSatisfy { $0 == ":" || $0 == "." || $0.isHexDigit }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    fileprivate func trimmingCharactersInSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
