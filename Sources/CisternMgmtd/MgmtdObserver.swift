import CisternCore
import CisternRouting

/// Receives what a cluster manager does, for checkers and metrics. Production passes
/// none; the simulator records every call to check its invariants.
public protocol MgmtdObserver: AnyObject, Sendable {
    /// `node` may accept writes under lease `epoch` from `from` until `until`.
    func primaryLease(node: NodeID, epoch: UInt64, from: UInt64, until: UInt64)
    /// `node` stopped acting as primary at `at`.
    func primaryEnded(node: NodeID, epoch: UInt64, at: UInt64)
    /// `node` committed `routing` to the KV at `at`.
    func routingCommitted(_ routing: RoutingInfo, node: NodeID, at: UInt64)
    /// `node` became primary with `routing` as the KV holds it: possibly a version
    /// whose commit the previous primary never learned the outcome of (it applied).
    func routingLoaded(_ routing: RoutingInfo, node: NodeID, at: UInt64)
}

extension MgmtdObserver {
    public func routingLoaded(_ routing: RoutingInfo, node: NodeID, at: UInt64) {}
}

/// Receives the routing a node accepted, for checkers. `session` identifies the
/// accepting client instance (a restarted process starts a new one).
public protocol RoutingObserver: AnyObject, Sendable {
    func accepted(_ routing: RoutingInfo, node: NodeID, session: UInt64, at: UInt64)
}
