/// Coding key for any string, used to list the keys a YAML mapping actually has.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Scenario files are read strictly: a misspelled key is an error that names the
/// key and the ones allowed, not a silently ignored setting.
func rejectUnknownKeys<K: CodingKey & CaseIterable>(_ decoder: any Decoder, _ keys: K.Type) throws {
    let c = try decoder.container(keyedBy: AnyKey.self)
    let allowed = Set(K.allCases.map(\.stringValue))
    for key in c.allKeys where !allowed.contains(key.stringValue) {
        throw DecodingError.dataCorrupted(.init(
            codingPath: decoder.codingPath + [key],
            debugDescription: "unknown key '\(key.stringValue)'; allowed here: \(allowed.sorted().joined(separator: ", "))"))
    }
}
