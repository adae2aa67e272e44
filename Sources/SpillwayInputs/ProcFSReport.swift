import ProcFS
import SpillwayCore

extension InputReport.Entry {
    init(_ e: ProcFSError) {
        self.init(path: e.path, line: e.line, kind: e.kind, message: e.reason)
    }
}

extension InputReport {
    /// A procfs line, file or mount point left out: counted and logged once per file and kind.
    mutating func skip(_ e: ProcFSError) { skip(Entry(e)) }

    /// The lines a parser left out: the first of them as entries, all of them counted.
    mutating func skip(_ lines: SkippedLines) {
        for e in lines.first { skip(e) }
        skipMore(lines.count - lines.first.count)
    }

    /// A fallback taken: said once, not counted.
    mutating func note(_ e: ProcFSError) { note(Entry(e)) }
}

extension ProcFS {
    /// Reads `relative` and parses it; the lines the parser left out go to `report` (also when the
    /// parse then throws for the whole file).
    func parse<T>(_ relative: String, report: inout InputReport,
                  _ parser: ([UInt8], String, inout SkippedLines) throws(ProcFSError) -> T) throws(ProcFSError) -> T {
        var skipped = SkippedLines()
        defer { report.skip(skipped) }
        return try parser(read(relative), path(relative), &skipped)
    }
}
