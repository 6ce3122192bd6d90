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

func describe(_ error: DecodingError) -> String {
    func path(_ p: [any CodingKey]) -> String {
        let s = p.map { k in k.intValue.map { "[\($0)]" } ?? ".\(k.stringValue)" }.joined()
        return s.hasPrefix(".") ? String(s.dropFirst()) : (s.isEmpty ? "(top level)" : s)
    }
    switch error {
    case .keyNotFound(let key, let ctx):
        return "\(path(ctx.codingPath + [key])): required key is missing"
    case .typeMismatch(let type, let ctx):
        return "\(path(ctx.codingPath)): expected \(type) (\(ctx.debugDescription))"
    case .valueNotFound(let type, let ctx):
        return "\(path(ctx.codingPath)): expected a \(type) value, found none"
    case .dataCorrupted(let ctx):
        return "\(path(ctx.codingPath)): \(ctx.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}
