import CisternCore

/// Why a scenario file could not be used. Each problem names where it is and what
/// to write instead.
public enum ScenarioError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, detail: String)
    case invalid(path: String, problems: [String])

    public var description: String {
        switch self {
        case .unreadable(let p, let r): return "\(p): cannot read the scenario: \(r)"
        case .malformed(let p, let d): return "\(p): \(d)"
        case .invalid(let p, let problems):
            return "\(p): \(problems.count) problem(s):\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
        }
    }
}

func describe(_ error: DecodingError) -> String { describeDecodingError(error) }
