import Logging

/// A swift-log handler that stamps each line with a `Runtime`'s clock (virtual time
/// in the simulator) and hands it to a sink.
public struct ClockLogHandler: LogHandler {
    public typealias Sink = @Sendable (_ line: String, _ level: Logger.Level) -> Void

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let node: String
    let now: @Sendable () -> UInt64
    let sink: Sink

    public init(label: String, node: String, level: Logger.Level, now: @escaping @Sendable () -> UInt64, sink: @escaping Sink) {
        self.label = label
        self.node = node
        self.logLevel = level
        self.now = now
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let ns = now()
        let seconds = ns / 1_000_000_000
        let micros = (ns / 1_000) % 1_000_000
        var micro = String(micros)
        micro = String(repeating: "0", count: 6 - micro.count) + micro
        var line = "\(seconds).\(micro) \(event.level) [\(node)] \(label): \(event.message)"
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        if !merged.isEmpty {
            line += " " + merged.keys.sorted().map { "\($0)=\(merged[$0]!)" }.joined(separator: " ")
        }
        sink(line, event.level)
    }
}
