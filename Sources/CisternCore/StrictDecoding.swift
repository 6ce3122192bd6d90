/// Coding key for any string, used to list the keys a YAML mapping actually has.
public struct AnyKey: CodingKey {
    public var stringValue: String
    public var intValue: Int? { nil }
    public init(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}

/// Scenario files are read strictly: a misspelled key is an error that names the
/// key and the ones allowed, not a silently ignored setting.
public func rejectUnknownKeys<K: CodingKey & CaseIterable>(_ decoder: any Decoder, _ keys: K.Type) throws {
    let c = try decoder.container(keyedBy: AnyKey.self)
    let allowed = Set(K.allCases.map(\.stringValue))
    for key in c.allKeys where !allowed.contains(key.stringValue) {
        throw DecodingError.dataCorrupted(.init(
            codingPath: decoder.codingPath + [key],
            debugDescription: "unknown key '\(key.stringValue)'; allowed here: \(allowed.sorted().joined(separator: ", "))"))
    }
}

/// A decoding error as "path.to.key: what is wrong", for config and scenario files.
public func describeDecodingError(_ error: DecodingError) -> String {
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
