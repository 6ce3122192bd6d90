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
