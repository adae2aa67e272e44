/// A secret (the Redis password) that redacts itself in every printing path: `description`,
/// `debugDescription`, string interpolation, `print`, `dump`, `Mirror` (reflection, and so the
/// ad-hoc description of any struct holding it, which a library may log). The text is reached only
/// through `revealed`, at the one place that sends it.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable,
                      CustomPlaygroundDisplayConvertible, ExpressibleByStringLiteral {
    private let value: String

    public init(_ value: String) { self.value = value }
    public init(stringLiteral value: String) { self.value = value }

    /// The secret itself: for the AUTH command only.
    public var revealed: String { value }
    public var isEmpty: Bool { value.isEmpty }

    public static let redacted = "***"
    public var description: String { Self.redacted }
    public var debugDescription: String { Self.redacted }
    public var playgroundDescription: Any { Self.redacted }
    /// No children: reflection (`dump`, `Mirror`, the default description of a type holding it)
    /// sees nothing but the redacted text.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: nil) }
}
