import CSQLite

// The agent's state for `spillway status` (read back by `SpoolStatus.read`).
extension Spool {
    /// Saves the agent's state (breaker, counters, …) for `spillway status`: one JSON value under
    /// key `state`, in one transaction that deletes the key/value rows an earlier version saved.
    public func saveState(_ state: AgentState) throws(SQLiteError) {
        let json: String
        do {
            json = try state.json()
        } catch {
            throw SQLiteError(code: SQLITE_MISUSE, message: "cannot encode the agent state: \(error)")
        }
        try locked { () throws(SQLiteError) in try saveStateLocked(json) }
    }

    private func saveStateLocked(_ json: String) throws(SQLiteError) {
        try transaction { () throws(SQLiteError) in
            try applyAcknowledgementsLocked()
            let others = try db.prepare(Schema.deleteOtherState)
            others.bind(1, AgentState.key)
            try others.run()
            putState.reset()
            putState.bind(1, AgentState.key)
            putState.bind(2, json)
            try putState.run()
        }
    }

    /// The agent's state as last saved (this version's or an earlier one's; empty when none was).
    public func readState() throws(SQLiteError) -> AgentState {
        try locked { () throws(SQLiteError) -> AgentState in AgentState(rows: try Self.stateRows(db)) }
    }

    /// Every row of `agent_state`.
    static func stateRows(_ db: SQLiteDatabase) throws(SQLiteError) -> [String: String] {
        let s = try db.prepare(Schema.allState)
        var rows: [String: String] = [:]
        while try s.step() { rows[s.string(0)] = s.string(1) }
        return rows
    }
}
