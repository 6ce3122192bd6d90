/// Network behaviour of a simulated world. Latency is `latencyMinNanoseconds` plus an
/// exponential extra with mean `latencyMeanExtraNanoseconds`.
public struct NetworkConfig: Sendable, Equatable {
    public var latencyMinNanoseconds: UInt64 = 50_000
    public var latencyMeanExtraNanoseconds: UInt64 = 100_000
    /// Probability that a message is silently dropped.
    public var lossProbability: Double = 0
    /// Probability that a message is delivered twice.
    public var duplicateProbability: Double = 0
    /// Probability that a message is held back (up to ten mean latencies), reordering it.
    public var reorderProbability: Double = 0
    /// How long after an address change the name service keeps answering the old address.
    public var nameServiceDelayNanoseconds: UInt64 = 0
    /// Latency of one name-service lookup.
    public var nameLookupNanoseconds: UInt64 = 100_000
    public init() {}
}

/// Disk behaviour of a simulated node.
public struct DiskConfig: Sendable, Equatable {
    public var latencyMinNanoseconds: UInt64 = 20_000
    public var latencyMeanExtraNanoseconds: UInt64 = 60_000
    /// Multiplies every latency (a slow disk fault sets it, for example to 50).
    public var slowFactor: Double = 1
    /// Probability that one operation fails with an I/O error.
    public var errorProbability: Double = 0
    /// Space the disk has, in bytes.
    public var capacityBytes: UInt64 = 1 << 40
    public init() {}
}

/// Behaviour of the simulated transactional KV store.
public struct KVConfig: Sendable, Equatable {
    /// Latency of a read and of a commit.
    public var operationNanoseconds: UInt64 = 100_000
    /// Probability that a commit fails with a spurious conflict.
    public var conflictProbability: Double = 0
    /// Probability that a commit answers "maybe committed" (applied or not, at random).
    public var maybeCommittedProbability: Double = 0
    public init() {}
}

/// Errors of the simulator itself (as opposed to the seams it simulates).
public enum SimError: Error, Equatable, Sendable, CustomStringConvertible {
    case tripwire(String)
    case unknownNode(String)
    case invalidOperation(String)

    public var description: String {
        switch self {
        case .tripwire(let r): return "determinism tripwire: \(r)"
        case .unknownNode(let n): return "no node named '\(n)' in this world"
        case .invalidOperation(let r): return r
        }
    }
}
