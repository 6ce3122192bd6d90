import CisternCore

/// A failed conformance check. Suites throw instead of using `#expect` because the
/// simulated implementations run the suite on the simulator thread, outside the
/// test's task (where Swift Testing's task-locals are not visible).
public struct ConformanceFailure: Error, CustomStringConvertible {
    public let message: String
    public let file: String
    public let line: Int
    public var description: String { "\(file):\(line): \(message)" }
}

/// Fails the running suite with `message` unless `condition` holds.
public func check(
    _ condition: @autoclosure () throws -> Bool, _ message: @autoclosure () -> String,
    file: String = #fileID, line: Int = #line
) throws {
    guard try condition() else { throw ConformanceFailure(message: message(), file: file, line: line) }
}

/// Runs `body` and fails unless it throws an error matching `matches`.
public func checkThrows<T>(
    _ what: String, file: String = #fileID, line: Int = #line,
    _ body: () async throws -> T, matches: (any Error) -> Bool
) async throws {
    do {
        _ = try await body()
    } catch {
        if matches(error) { return }
        throw ConformanceFailure(message: "\(what): unexpected error \(error)", file: file, line: line)
    }
    throw ConformanceFailure(message: "\(what): expected an error, got success", file: file, line: line)
}

/// What the Transport suite needs from an implementation: nodes that can reach each
/// other by `NodeID`, and a way to move a node to a new address (IP drift).
public protocol TransportHarness: Sendable {
    /// The runtime the suite uses for sleeps and spawns.
    var runtime: any Runtime { get }
    /// Starts node `id` with a fresh transport, registered with the resolver.
    func start(_ id: NodeID) async throws -> any Transport
    /// Stops node `id`'s transport and starts a new one for the same identity at a
    /// different address, updating the resolver. Returns the new transport.
    func move(_ id: NodeID) async throws -> any Transport
    /// Stops node `id` (calls to it then fail with `unreachable` or `timeout`).
    func stop(_ id: NodeID) async throws
    /// Tears everything down.
    func finish() async
}

/// What the Disk suite needs: a fresh, empty disk, and the runtime to use.
public protocol DiskHarness: Sendable {
    var runtime: any Runtime { get }
    /// A new empty disk; `capacityBytes` is a hint that implementations able to
    /// limit space honor (simulated disk), others ignore.
    func makeDisk() async throws -> any Disk
    func finish() async
}

/// What the KV suite needs: a fresh, empty store, and the runtime to use.
public protocol KVHarness: Sendable {
    var runtime: any Runtime { get }
    func makeStore() async throws -> any TransactionalKV
    func finish() async
}
