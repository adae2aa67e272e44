/// A record waiting to be written, with the index of its route.
public struct QueuedRecord: Sendable {
    /// The record; for a tailed line of format `raw`, less its `message` field, which `message`
    /// holds (see `fullRecord`).
    public var record: Record
    public var route: Int
    /// For a tailed line: how far its file has been read once this line is delivered (set for every
    /// line; the encoder takes the last of each file in a batch).
    public var checkpoint: FileCheckpoint?
    /// A tailed line's text: the record's first field, `message`, kept apart (no String per line).
    public var message: LineText?

    public init(record: Record, route: Int, checkpoint: FileCheckpoint? = nil, message: LineText? = nil) {
        self.record = record
        self.route = route
        self.checkpoint = checkpoint
        self.message = message
    }

    /// The record with its message.
    public var fullRecord: Record { record.with(message: message) }

    /// Its fields, `message` included.
    public var fieldCount: Int { record.fields.count + (message == nil ? 0 : 1) }
}
