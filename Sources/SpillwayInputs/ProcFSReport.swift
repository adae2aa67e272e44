import ProcFS
import SpillwayCore

extension InputReport {
    /// A procfs line (or file) left out: counted and logged once per file and kind.
    mutating func skip(_ e: ProcFSError) {
        skipped.append(Entry(path: e.path, line: e.line, kind: e.kind, message: e.reason))
    }
}

extension ProcFS {
    /// Reads `relative` and parses it; the lines the parser left out go to `report.skipped`.
    /// Throws (with nothing reported) when the file cannot be read or holds nothing usable.
    func parse<T>(_ relative: String, report: inout InputReport,
                  _ parser: ([UInt8], String, inout [ProcFSError]) throws(ProcFSError) -> T) throws(ProcFSError) -> T {
        var skipped: [ProcFSError] = []
        defer { for e in skipped { report.skip(e) } }
        return try parser(read(relative), path(relative), &skipped)
    }
}
