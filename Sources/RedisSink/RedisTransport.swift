import CSSL
import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// A connected socket to Redis (TCP or unix), plain or TLS: Spillway's own, so that it writes RESP
/// itself and owns every byte on the wire. Blocking, bounded by the socket's send and receive
/// timeouts. Not thread-safe: owned by one `RedisConnection`.
public final class RedisTransport {
    let fd: Int32
    /// The TLS session (SSL *), nil for a plain socket.
    private let ssl: OpaquePointer?
    private let context: OpaquePointer?
    let display: String
    /// The socket's send and receive timeout (named when it passes).
    let timeout: Int64
    /// Whether a client certificate is offered (TLS).
    let offersCertificate: Bool
    /// Bytes read on this connection so far: an error before the first says more about the setup
    /// (a TLS port spoken to in plain text, a client certificate the server wants).
    private var bytesRead = 0

    private init(fd: Int32, ssl: OpaquePointer?, context: OpaquePointer?, display: String, timeout: Int64, offersCertificate: Bool = false) {
        self.fd = fd
        self.ssl = ssl
        self.context = context
        self.display = display
        self.timeout = timeout
        self.offersCertificate = offersCertificate
    }

    deinit {
        if let ssl { SSL_free(ssl) }
        if let context { SSL_CTX_free(context) }
        Glibc.close(fd)
    }

    var isTLS: Bool { ssl != nil }

    /// Connects within `connectTimeout` (each address of the host in turn), sets the socket's send
    /// and receive timeouts to `timeout`, TCP_NODELAY and keepalive, and with `tls` makes the
    /// handshake (within `connectTimeout` too). A failed handshake or verification names why.
    static func connect(_ endpoint: RedisEndpoint, tls: RedisTLSOptions?, connectTimeout: Int64, timeout: Int64,
                        keepalive: Bool) throws(RedisError) -> RedisTransport {
        let display = endpoint.display
        let fd: Int32
        switch endpoint.address {
        case .tcp(let host, let port):
            fd = try connectTCP(host: host, port: port, timeout: connectTimeout, display: display)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if keepalive { enableKeepalive(fd) }
        case .unix(let path):
            fd = try connectUnix(path: path, timeout: connectTimeout, display: display)
        }
        setTimeout(fd, connectTimeout)
        guard let tls else {
            setTimeout(fd, timeout)
            return RedisTransport(fd: fd, ssl: nil, context: nil, display: display, timeout: timeout)
        }
        var host = ""
        if case .tcp(let h, _) = endpoint.address { host = h }
        let name = tls.serverName ?? host
        let context: OpaquePointer
        switch makeContext(tls) {
        case .success(let c): context = c
        case .failure(let why):
            Glibc.close(fd)
            throw .connection("\(display): \(why.text)")
        }
        var err = [CChar](repeating: 0, count: 512)
        guard let ssl = spillway_ssl_new(context, fd, name, isIPAddress(name) ? 1 : 0) else {
            SSL_CTX_free(context)
            Glibc.close(fd)
            throw .connection("\(display): cannot set up TLS for the server name \"\(name)\"")
        }
        let transport = RedisTransport(fd: fd, ssl: ssl, context: context, display: display, timeout: timeout,
                                       offersCertificate: tls.certFile != nil)
        if spillway_ssl_connect(ssl, &err, err.count) != 1 {
            let why = Self.text(err)
            if why.contains("Resource temporarily unavailable") || why.contains("wrong version number") || why.contains("packet length too long") {
                throw .connection("\(display): TLS handshake failed: no TLS answer within \(Units.formatDuration(connectTimeout)) (\(why)); "
                                  + "is this port serving TLS? A plain port needs a redis:// url")
            }
            throw .connection("\(display): \(why)\(hint(why, name: name, tls: tls))")
        }
        setTimeout(fd, timeout)
        return transport
    }

    /// What to check for a failed verification.
    static func hint(_ error: String, name: String, tls: RedisTLSOptions) -> String {
        if error.contains("hostname mismatch") || error.contains("IP address mismatch") {
            return " (the server's certificate does not hold \"\(name)\": set tls_server_name to a name it holds, or connect by that name)"
        }
        if error.contains("self-signed certificate") || error.contains("unable to get local issuer certificate")
            || error.contains("unable to verify the first certificate") {
            return tls.caFile.map { " (\($0), tls_ca_file, is not the CA that signed the server's certificate)" }
                ?? " (the system's CAs did not sign the server's certificate: set tls_ca_file to the CA that did)"
        }
        if error.contains("certificate has expired") || error.contains("not yet valid") {
            return " (the server's certificate must be renewed; or check this host's clock)"
        }
        return ""
    }

    /// Why a TLS configuration cannot work (its files do not load as OpenSSL needs them: a CA file
    /// without certificates, a key that is not the certificate's), or nil. For `check`.
    public static func problem(with tls: RedisTLSOptions) -> String? {
        switch makeContext(tls) {
        case .success(let context):
            SSL_CTX_free(context)
            return nil
        case .failure(let why):
            return why.text
        }
    }

    struct ContextError: Error { let text: String }

    /// The SSL_CTX for `tls` (its CA, client certificate and key loaded), or why it cannot be made.
    static func makeContext(_ tls: RedisTLSOptions) -> Result<OpaquePointer, ContextError> {
        var err = [CChar](repeating: 0, count: 512)
        guard let context = spillway_ssl_client_context(tls.caFile, tls.certFile, tls.certFile == nil ? nil : tls.keyFile,
                                                        tls.insecureSkipVerify ? 1 : 0, &err, err.count) else {
            return .failure(ContextError(text: text(err)))
        }
        return .success(context)
    }

    /// Writes all of `bytes`.
    func write(_ bytes: UnsafeRawBufferPointer) throws(RedisError) {
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            if let ssl {
                var code: Int32 = 0, sysErrno: Int32 = 0
                let n = spillway_ssl_write(ssl, rest.baseAddress, Int32(min(rest.count, Int(Int32.max))), &code, &sysErrno)
                if n > 0 {
                    offset += n
                    continue
                }
                throw tlsError(code: code, errno: sysErrno, doing: "writing")
            }
            let n = send(fd, rest.baseAddress, rest.count, Int32(MSG_NOSIGNAL))
            if n > 0 {
                offset += n
            } else if n < 0, errno == EINTR {
                continue
            } else {
                throw socketError(errno, doing: "writing")
            }
        }
    }

    /// Reads what is there (waiting for at least a byte, or the low-water mark): the count, never 0
    /// (the server closing the connection is an error).
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(RedisError) -> Int {
        while true {
            if let ssl {
                var code: Int32 = 0, sysErrno: Int32 = 0
                let n = spillway_ssl_read(ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))), &code, &sysErrno)
                if n > 0 {
                    bytesRead += n
                    return n
                }
                throw tlsError(code: code, errno: sysErrno, doing: "reading")
            }
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n > 0 {
                bytesRead += n
                return n
            }
            if n == 0 { throw .connection("\(display): reading: the server closed the connection\(setupHint)") }
            if errno == EINTR { continue }
            throw socketError(errno, doing: "reading")
        }
    }

    private func socketError(_ code: Int32, doing: String) -> RedisError {
        if code == EAGAIN || code == EWOULDBLOCK {
            return .timeout("\(display): \(doing): no answer within \(Units.formatDuration(timeout))")
        }
        let text = "\(display): \(doing): \(String(cString: strerror(code)))"
        return .connection(code == ECONNRESET || code == EPIPE ? text + setupHint : text)
    }

    /// What may be wrong when the server drops the connection before answering anything: it wants
    /// TLS, or (over TLS) a client certificate. Empty once it answered.
    private var setupHint: String {
        guard bytesRead == 0 else { return "" }
        if ssl == nil { return " (if this port serves TLS, use a rediss:// url)" }
        return offersCertificate ? "" : " (the server may want a client certificate: set tls_cert_file and tls_key_file)"
    }

    private func tlsError(code: Int32, errno sysErrno: Int32, doing: String) -> RedisError {
        switch code {
        case SSL_ERROR_ZERO_RETURN:
            return .connection("\(display): \(doing): the server closed the TLS session\(setupHint)")
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return socketError(EAGAIN, doing: doing)
        case SSL_ERROR_SYSCALL:
            if sysErrno == EAGAIN || sysErrno == EWOULDBLOCK { return socketError(sysErrno, doing: doing) }
            if sysErrno == 0 { return .connection("\(display): \(doing): the server closed the connection\(setupHint)") }
            return socketError(sysErrno, doing: doing)
        default:
            var err = [CChar](repeating: 0, count: 256)
            spillway_ssl_error(&err, err.count)
            let reason = Self.text(err)
            let hint = reason.contains("certificate required") ? setupHint : ""
            return .connection("\(display): \(doing): TLS error\(reason.isEmpty ? " \(code)" : ": \(reason)")\(hint)")
        }
    }

    /// A C string in `buffer` (up to its NUL).
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: sockets

    static func setTimeout(_ fd: Int32, _ ns: Int64) {
        var tv = timeval(tv_sec: Int(ns / 1_000_000_000), tv_usec: Int((ns % 1_000_000_000) / 1000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// As hiredis: probes after 15 s idle, every 5 s, 3 of them (a peer gone for good is found in
    /// about 30 s).
    static func enableKeepalive(_ fd: Int32) {
        var one: Int32 = 1, idle: Int32 = 15, interval: Int32 = 5, count: Int32 = 3
        let size = socklen_t(MemoryLayout<Int32>.size)
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, size)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
    }

    static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    static func connectTCP(host: String, port: Int, timeout: Int64, display: String) throws(RedisError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw .connection("\(display): cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var ai: UnsafeMutablePointer<addrinfo>? = first
        let deadline = monotonicNanoseconds() + timeout
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            if fd < 0 {
                lastError = String(cString: strerror(errno))
                continue
            }
            switch connectWithin(fd, a.pointee.ai_addr, a.pointee.ai_addrlen, deadline: deadline) {
            case nil: return fd
            case let why?:
                Glibc.close(fd)
                lastError = why
                if why == "connection timed out" { throw .timeout("\(display): connecting: \(why)") }
            }
        }
        throw .connection("\(display): connecting: \(lastError)")
    }

    static func connectUnix(path: String, timeout: Int64, display: String) throws(RedisError) -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .connection("\(display): the socket path is too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .connection("\(display): \(String(cString: strerror(errno)))") }
        let why = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connectWithin(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size), deadline: monotonicNanoseconds() + timeout)
            }
        }
        if let why {
            Glibc.close(fd)
            throw why == "connection timed out" ? .timeout("\(display): connecting: \(why)") : .connection("\(display): connecting: \(why)")
        }
        return fd
    }

    /// A non-blocking connect waited for with poll until `deadline`; nil when connected (the socket
    /// is blocking again), else why not.
    static func connectWithin(_ fd: Int32, _ address: UnsafePointer<sockaddr>?, _ length: socklen_t, deadline: Int64) -> String? {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        if Glibc.connect(fd, address, length) != 0 {
            guard errno == EINPROGRESS || errno == EINTR || errno == EAGAIN else { return String(cString: strerror(errno)) }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            while true {
                let left = deadline - monotonicNanoseconds()
                if left <= 0 { return "connection timed out" }
                let n = poll(&p, 1, Int32(min(Int64(Int32.max), max(1, left / 1_000_000))))
                if n > 0 { break }
                if n < 0, errno != EINTR { return String(cString: strerror(errno)) }
            }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { return String(cString: strerror(err)) }
        }
        _ = fcntl(fd, F_SETFL, flags)
        return nil
    }
}
