import SpillwayCore

extension InputInstance {
    /// Runs the input once and appends its records, each with `name_override` applied and the common
    /// tags added: the record's own tags win over the instance's `tags`, which win over
    /// `[agent.tags]`, which win over `host`. What the input left out or wants said goes to `report`.
    /// Returns the input's error, if it failed; records it had appended before failing are kept.
    public mutating func collect(agent: AgentConfig, now: Int64, into records: inout [Record],
                                 report: inout InputReport) -> (any Error)? {
        let start = records.count
        let context = InputContext(procRoot: agent.procRoot, sysRoot: agent.sysRoot, hostRoot: agent.hostRoot, now: now)
        var failure: (any Error)?
        do {
            try input.gather(into: &records, report: &report, context: context)
        } catch {
            failure = error
        }
        applyCommon(agent: agent, to: &records, from: start)
        return failure
    }

    /// `name_override` and the common tags on the records from `start` on (see `collect`).
    public func applyCommon(agent: AgentConfig, to records: inout [Record], from start: Int) {
        guard start < records.count else { return }
        let common = commonTags(agent: agent)
        for i in start..<records.count {
            if let nameOverride { records[i].name = nameOverride }
            records[i].addTagsIfAbsent(common)
        }
    }

    /// The instance's tags over `[agent.tags]` over `host`, as one sorted list.
    public func commonTags(agent: AgentConfig) -> [Tag] {
        var r = Record(name: "", tags: tags, fields: [], timestamp: 0)
        r.addTagsIfAbsent(agent.tags)
        r.addTagsIfAbsent([Tag("host", agent.hostname)])
        return r.tags
    }
}
