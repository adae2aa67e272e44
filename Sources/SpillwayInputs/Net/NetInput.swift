import ProcFS
import SpillwayConfig
import SpillwayCore

/// `net`: traffic counters per interface, from /proc/net/dev (with host_root: the host's,
/// proc_root/1/net/dev).
public struct NetInput: Input {
    /// Only interfaces matching one of these globs. When empty: every interface but `lo`.
    public var interfaces: [Glob]

    public init(interfaces: [Glob] = []) {
        self.interfaces = interfaces
    }

    public static let descriptor = InputDescriptor(name: "net", summary: "traffic counters per interface (/proc/net/dev)") { r in
        NetInput(interfaces: r.globs("interfaces"))
    }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        var stats: [NetDevStat]
        if context.hostRoot.isEmpty {
            stats = try proc.parse("net/dev", report: &report, NetDev.parse)
        } else {
            // In a container: the host's interfaces are those of the host's init (proc_root/net is
            // this process's own network namespace, the host's only with host networking).
            do {
                stats = try proc.parse("1/net/dev", report: &report, NetDev.parse)
            } catch {
                do {
                    stats = try proc.parse("net/dev", report: &report, NetDev.parse)
                } catch let second {
                    throw InputError("neither the host's interfaces (\(error)) nor this process's (\(second)) can be read: is the host's /proc at \(context.procRoot)?")
                }
                report.note(ProcFSError(path: error.path, kind: "fallback",
                                        reason: "\(error.reason): the host's interfaces cannot be read, so this process's own (net/dev) are reported"))
            }
        }
        // Every machine has lo: a file without a single interface line is not /proc/net/dev.
        if stats.isEmpty, report.skippedCount == 0 {
            throw InputError("\(proc.path(context.hostRoot.isEmpty ? "net/dev" : "1/net/dev")): no interface lines (is this /proc/net/dev?)")
        }
        for n in stats {
            if interfaces.isEmpty {
                if n.name == "lo" { continue }
            } else if !interfaces.contains(where: { $0.matches(n.name) }) {
                continue
            }
            records.append(Record(name: "net", tags: [Tag("interface", n.name)], fields: [
                Field("bytes_recv", .uint(n.rxBytes)),
                Field("bytes_sent", .uint(n.txBytes)),
                Field("packets_recv", .uint(n.rxPackets)),
                Field("packets_sent", .uint(n.txPackets)),
                Field("err_in", .uint(n.rxErrors)),
                Field("err_out", .uint(n.txErrors)),
                Field("drop_in", .uint(n.rxDropped)),
                Field("drop_out", .uint(n.txDropped)),
            ], timestamp: context.now))
        }
    }
}
