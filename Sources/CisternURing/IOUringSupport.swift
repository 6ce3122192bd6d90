/// Whether this process can use io_uring, as found by `IOUringProbe.probe()`.
public enum IOUringSupport: Sendable, Equatable, CustomStringConvertible {
    /// A ring could be set up and torn down.
    case available
    /// Setting up a ring failed; `reason` names the errno and its likely cause.
    case unavailable(reason: String)

    public var isAvailable: Bool { self == .available }

    public var description: String {
        switch self {
        case .available: return "io_uring available"
        case .unavailable(let reason): return "io_uring unavailable: \(reason)"
        }
    }
}
