import CisternCore
import Synchronization

/// A `Resolver` backed by a table of addresses per node, which can be changed while
/// the system runs (`set`, `remove`); a lookup always sees the latest table.
///
/// Promises: `resolve` returns the addresses last `set` for the node, in the order
/// given; a node with no entry (or an empty one) fails with `.unreachable`.
public final class StaticResolver: CisternCore.Resolver {
    private let table: Mutex<[NodeID: [NodeAddress]]>

    public init(_ table: [NodeID: [NodeAddress]] = [:]) {
        self.table = Mutex(table)
    }

    /// Replaces `node`'s addresses; callers try them in order.
    public func set(_ node: NodeID, _ addresses: [NodeAddress]) {
        table.withLock { $0[node] = addresses }
    }

    /// Forgets `node`.
    public func remove(_ node: NodeID) {
        table.withLock { _ = $0.removeValue(forKey: node) }
    }

    /// The addresses currently known for `node` (empty when none).
    public func addresses(of node: NodeID) -> [NodeAddress] {
        table.withLock { $0[node] ?? [] }
    }

    public func resolve(_ node: NodeID) async throws(TransportError) -> [NodeAddress] {
        let addresses = table.withLock { $0[node] ?? [] }
        guard !addresses.isEmpty else {
            throw .unreachable(node: node, reason: "no address known for \(node); add it to the config")
        }
        return addresses
    }
}
