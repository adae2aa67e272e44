import SpillwayCore

extension InputInstance {
    /// Runs the input once and appends its records, each with `name_override` applied and the common
    /// tags added: the record's own tags win over the instance's `tags`, which win over
    /// `[agent.tags]`, which win over `host`. Returns the input's error, if it failed; records it had
    /// appended before failing are kept.
    public mutating func collect(agent: AgentConfig, now: Int64, into records: inout [Record]) -> (any Error)? {
        let start = records.count
        let context = InputContext(procRoot: agent.procRoot, sysRoot: agent.sysRoot, now: now)
        var failure: (any Error)?
        do {
            try input.gather(into: &records, context: context)
        } catch {
            failure = error
        }
        for i in start..<records.count {
            if let nameOverride { records[i].name = nameOverride }
            for tag in tags { records[i].addTagIfAbsent(tag.key, tag.value) }
            for tag in agent.tags { records[i].addTagIfAbsent(tag.key, tag.value) }
            records[i].addTagIfAbsent("host", agent.hostname)
        }
        return failure
    }
}
