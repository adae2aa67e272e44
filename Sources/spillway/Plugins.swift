import ArgumentParser
import Foundation
import SpillwayConfig
import SpillwayCore
import SpillwayInputs

/// `spillway plugins [NAME]`: the built-in inputs, or one input's options and sample.
struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the built-in inputs, or show one input's options (with their defaults) and its sample configuration."
    )

    @Argument(help: ArgumentHelp("An input's name, e.g. cpu.", valueName: "name"))
    var name: String?

    func run() throws {
        guard let name else {
            let width = InputRegistry.all.map(\.name.count).max() ?? 0
            var out = ""
            for d in InputRegistry.all {
                out += d.name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + d.summary + "\n"
            }
            out += "\n`spillway plugins NAME` shows an input's options and its sample.\n"
            FileHandle.standardOutput.write(Data(out.utf8))
            return
        }
        guard let d = InputRegistry.all.first(where: { $0.name == name }) else {
            let hint = closestMatch(to: name, in: InputRegistry.all.map(\.name)).map { "; did you mean \"\($0)\"?" } ?? ""
            throw ValidationError("no input \"\(name)\"\(hint) (built-in inputs: \(InputRegistry.all.map(\.name).joined(separator: ", ")))")
        }
        FileHandle.standardOutput.write(Data(Self.describe(d).utf8))
    }

    static let common: Set<String> = ["interval", "name_override", "tags", "key", "maxlen"]

    static func describe(_ d: InputDescriptor) -> String {
        var out = "\(d.name): \(d.summary)\(d.scheduled ? "" : " (runs continuously)")\n\nOptions (default):\n"
        let options = d.options
        let width = options.map(\.key.count).max() ?? 0
        for o in options where !common.contains(o.key) {
            out += "  " + o.key.padding(toLength: width + 2, withPad: " ", startingAt: 0) + o.default + "\n"
        }
        out += "\nEvery input also takes: " + options.filter { common.contains($0.key) && (d.scheduled || $0.key != "interval") }.map { o in
            o.key == "interval" ? "interval ([agent] interval when none)" : o.key
        }.joined(separator: ", ") + " (docs/configuration.md: Every [[inputs.NAME]]).\n"
        if let sample = Samples.plugins.first(where: { $0.file == "\(d.name).toml" }) {
            out += "\nSample (plugins.d/\(sample.file)):\n\n" + sample.text
        }
        return out
    }
}

/// `spillway config`: a complete commented sample configuration (agent.toml and every input's sample).
struct ConfigSample: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print a complete commented sample configuration: agent.toml, then every input's sample (as plugins.d/ ships them).",
        discussion: "Save it as agent.toml (with an empty or no plugins.d/ beside it) and edit; `spillway check` validates it."
    )

    func run() throws {
        var out = Samples.agent
        for p in Samples.plugins {
            out += "\n# ---- plugins.d/\(p.file) ----\n" + p.text
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}
