/// Where Redis is, as `[outputs.redis] url` says: `redis://[user:password@]host[:port][/db]` or
/// `unix:///path/to.sock[?db=N]`. Percent-escapes in the user and password are decoded.
public struct RedisEndpoint: Sendable, Equatable {
    public enum Address: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var address: Address
    /// `rediss://`: TLS on the connection.
    public var tls = false
    public var username: String?
    /// Redacts itself in every printing path (see `Secret`).
    public var password: Secret?
    public var db: Int

    public init(address: Address, username: String? = nil, password: Secret? = nil, db: Int = 0) {
        self.address = address
        self.username = username
        self.password = password
        self.db = db
    }

    public struct SyntaxError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Whether the address is on this machine's loopback (127.0.0.0/8, ::1, localhost) or a socket.
    public var isLocal: Bool {
        switch address {
        case .unix: return true
        case .tcp(let host, _): return host == "localhost" || host == "::1" || host.hasPrefix("127.")
        }
    }

    /// The address without credentials, for logs.
    public var display: String {
        switch address {
        case .tcp(let host, let port): return (host.contains(":") ? "[\(host)]:\(port)/\(db)" : "\(host):\(port)/\(db)") + (tls ? " (TLS)" : "")
        case .unix(let path): return "unix:\(path)?db=\(db)"
        }
    }

    public static func parse(_ url: String) throws(SyntaxError) -> RedisEndpoint {
        func fail(_ why: String) -> SyntaxError {
            SyntaxError(description: "\(why) in url \"\(redacted(url))\"; write redis://[user:password@]host:port/db, rediss://… (TLS) or unix:///path/to.sock?db=N")
        }
        if url.hasPrefix("unix://") {
            var rest = Substring(url.dropFirst("unix://".count))
            var db = 0
            if let q = rest.firstIndex(of: "?") {
                let query = rest[rest.index(after: q)...]
                rest = rest[..<q]
                for pair in query.split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, kv[0] == "db", let n = Int(kv[1]), n >= 0 else { throw fail("unknown query \"\(pair)\"") }
                    db = n
                }
            }
            guard rest.hasPrefix("/") else { throw fail("a unix socket needs an absolute path") }
            return RedisEndpoint(address: .unix(path: String(rest)), db: db)
        }
        let tls = url.hasPrefix("rediss://")
        guard url.hasPrefix("redis://") || tls else { throw fail("unknown scheme") }
        var rest = Substring(url.dropFirst(tls ? "rediss://".count : "redis://".count))
        var endpoint = RedisEndpoint(address: .tcp(host: "127.0.0.1", port: 6379))
        endpoint.tls = tls
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = userinfo[..<colon]
                endpoint.username = user.isEmpty ? nil : percentDecoded(user)
                endpoint.password = Secret(percentDecoded(userinfo[userinfo.index(after: colon)...]))
            } else if !userinfo.isEmpty {
                endpoint.username = percentDecoded(userinfo)
            }
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let dbText = rest[rest.index(after: slash)...]
            if !dbText.isEmpty {
                guard let db = Int(dbText), db >= 0 else { throw fail("database \"\(dbText)\" is not a number") }
                endpoint.db = db
            }
        }
        var host = "127.0.0.1"
        var port = 6379
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw fail("unclosed [ in the host") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()) else { throw fail("bad port") }
                port = p
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let p = Int(hostPort[hostPort.index(after: colon)...]) else { throw fail("bad port") }
            port = p
        } else if !hostPort.isEmpty {
            host = String(hostPort)
        }
        guard !host.isEmpty else { throw fail("empty host") }
        guard (1...65535).contains(port) else { throw fail("port \(port) is out of range") }
        endpoint.address = .tcp(host: host, port: port)
        return endpoint
    }

    /// The url with its password replaced by `***`, whatever its scheme (a url refused for its
    /// scheme, `rediss://` or `REDIS://`, is printed in the error too): everything between the
    /// user's name and the last `@`; a userinfo without a `:` may be a password alone, and is
    /// hidden whole.
    public static func redacted(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        var start = url.startIndex
        if let scheme = url.firstRange(of: "://"), scheme.upperBound <= at { start = scheme.upperBound }
        if let colon = url[start..<at].firstIndex(of: ":") {
            return String(url[..<url.index(after: colon)]) + "***" + String(url[at...])
        }
        return String(url[..<start]) + "***" + String(url[at...])
    }

    static func percentDecoded(_ s: Substring) -> String {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 2 < b.count,
               let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// TLS for `rediss://` urls (`[outputs.redis]` tls_* keys).
public struct RedisTLSOptions: Sendable, Equatable {
    /// PEM file of the CAs the server's certificate is checked against (nil: the system's).
    public var caFile: String?
    /// Client certificate and key (PEM) for servers that ask for one (mutual TLS).
    public var certFile: String?
    public var keyFile: String?
    /// The name the certificate must hold (nil: the url's host), also sent as SNI.
    public var serverName: String?
    /// Accept any certificate (a loud warning at start).
    public var insecureSkipVerify = false

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, serverName: String? = nil, insecureSkipVerify: Bool = false) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.serverName = serverName
        self.insecureSkipVerify = insecureSkipVerify
    }
}
