/// One input instance's figures: when it last collected, how long that took, and its errors and
/// records so far (since the agent started; they carry across reloads while the instance stays).
/// Saved with the agent's state (`AgentState.inputs`) for `spillway status`.
public struct InputFigures: Sendable, Equatable, Codable {
    /// The plugin (`cpu`).
    public var input: String
    /// Where it was declared (`file:line`), or `[agent] internal` for the internal input.
    public var at: String
    /// When its last collection began (wall clock, ns); nil before the first.
    public var lastGatherNs: Int64?
    /// How long its last collection took (for tail: its last poll), ns.
    public var durationNs: Int64 = 0
    /// Failed collections plus parts left out, so far.
    public var errors: Int64 = 0
    /// Records it produced, so far.
    public var records: Int64 = 0

    public init(input: String, at: String) {
        self.input = input
        self.at = at
    }

    enum CodingKeys: String, CodingKey {
        case input, at, errors, records
        case lastGatherNs = "last_gather_ns"
        case durationNs = "duration_ns"
    }
}
