import CisternSim

/// The client-side record of every operation of a run: what was asked, when, and
/// what came back. Checkers read only this (and the final state).
public final class History: @unchecked Sendable {
    public struct Operation: Sendable {
        public enum Kind: Sendable { case read, write }
        public var client: String
        public var incarnation: UInt64
        public var key: String
        public var kind: Kind
        /// Written value, or the value a read returned (nil: empty register).
        public var value: String?
        public var invokedNanoseconds: UInt64
        public var completedNanoseconds: UInt64?
        /// nil while pending; false when the client got an error (outcome unknown for writes).
        public var succeeded: Bool?
    }

    public private(set) var operations: [Operation] = []

    public init() {}

    /// Records an invocation; returns its index for `complete`.
    public func invoke(client: String, incarnation: UInt64, key: String, kind: Operation.Kind, value: String?, at time: UInt64) -> Int {
        operations.append(Operation(client: client, incarnation: incarnation, key: key, kind: kind, value: value, invokedNanoseconds: time))
        return operations.count - 1
    }

    public func complete(_ index: Int, at time: UInt64, succeeded: Bool, readValue: String?? = .none) {
        operations[index].completedNanoseconds = time
        operations[index].succeeded = succeeded
        if case .some(let v) = readValue { operations[index].value = v }
    }
}

extension History {
    /// The liveness phase of `scenario` at the end of a run in `world`: operations of
    /// client processes still alive must have finished within the bound.
    func pendingAfterHeal(_ scenario: Scenario, world: SimWorld) -> [String] {
        pendingAfterHeal(healAt: scenario.healTime.nanoseconds, bound: scenario.liveness.nanoseconds, end: world.nowNanoseconds) { client, incarnation in
            (try? world.node(named: client))?.process.map { $0.incarnation == incarnation && !$0.isDead } ?? false
        }
    }

    /// The liveness phase: after the heal, every operation must finish (succeed or
    /// fail) within `bound` of the heal or of its own start, whichever is later.
    /// Operations of a client process that died are exempt (nobody waits for them).
    public func pendingAfterHeal(healAt: UInt64, bound: UInt64, end: UInt64, isLive: (String, UInt64) -> Bool = { _, _ in true }) -> [String] {
        var out: [String] = []
        for op in operations {
            let deadline = max(op.invokedNanoseconds, healAt) &+ bound
            if let done = op.completedNanoseconds {
                guard done > deadline else { continue }
                out.append("liveness: \(op.client)'s \(op.kind) of \(op.key) started at \(formatSeconds(op.invokedNanoseconds)) finished only at \(formatSeconds(done)), over the \(SimDuration(nanoseconds: bound)) bound after the heal at \(formatSeconds(healAt))")
            } else if end > deadline && isLive(op.client, op.incarnation) {
                out.append("liveness: \(op.client)'s \(op.kind) of \(op.key) started at \(formatSeconds(op.invokedNanoseconds)) was still pending at \(formatSeconds(end)), over the \(SimDuration(nanoseconds: bound)) bound after the heal at \(formatSeconds(healAt))")
            }
            if out.count >= 5 { break }
        }
        return out
    }
}
