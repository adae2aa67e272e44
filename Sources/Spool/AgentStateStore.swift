// The agent's state for `spillway status` (read back by `SpoolStatus.read`).
extension Spool {
    /// Saves the agent's state (breaker, counters, …) for `spillway status`, in one transaction.
    public func saveState(_ values: [String: String]) throws(SQLiteError) {
        try locked { () throws(SQLiteError) in try saveStateLocked(values) }
    }

    private func saveStateLocked(_ values: [String: String]) throws(SQLiteError) {
        try transaction { () throws(SQLiteError) in
            try applyAcknowledgementsLocked()
            for (k, v) in values {
                putState.reset()
                putState.bind(1, k)
                putState.bind(2, v)
                try putState.run()
            }
        }
    }
}
