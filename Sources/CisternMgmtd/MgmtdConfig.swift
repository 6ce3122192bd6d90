/// Timing of the cluster manager. The defaults detect a dead node in about 3.5 s
/// (3FS: up to 60 s) yet tolerate 1% message loss: losing six heartbeats in a row at
/// 1% loss happens once in 10^12 tries.
public struct MgmtdConfig: Sendable, Equatable {
    /// How often nodes send heartbeats.
    public var heartbeatIntervalNanoseconds: UInt64 = 500_000_000
    /// A node whose heartbeats stop for this long is declared failed.
    public var failureTimeoutNanoseconds: UInt64 = 3_000_000_000
    /// How often the primary re-evaluates node and chain states.
    public var scanIntervalNanoseconds: UInt64 = 250_000_000
    public var leaseDurationNanoseconds: UInt64 = 4_000_000_000
    public var leaseRenewIntervalNanoseconds: UInt64 = 1_000_000_000
    public var leaseMarginNanoseconds: UInt64 = 500_000_000
    /// Timeout of the primary's calls (hints) and of its KV transactions' retries.
    public var callTimeoutNanoseconds: UInt64 = 500_000_000

    /// A deliberate bug for checker self-tests: replicas take the lease over as soon as
    /// they see another holder, so two may act as primary at once. Never set it in a
    /// deployment.
    public var plantedEarlyTakeover = false

    public init() {}

    /// Checks the settings against each other; returns problems with their fixes.
    public func problems() -> [String] {
        var out: [String] = []
        if failureTimeoutNanoseconds < 2 * heartbeatIntervalNanoseconds {
            out.append("failure timeout must be at least two heartbeat intervals, or one lost heartbeat fails a healthy node")
        }
        if leaseDurationNanoseconds <= 2 * leaseMarginNanoseconds {
            out.append("lease duration must exceed twice the lease margin")
        }
        if leaseRenewIntervalNanoseconds >= leaseDurationNanoseconds - leaseMarginNanoseconds {
            out.append("renew the lease more often than (duration - margin), or the primary lapses between renewals")
        }
        return out
    }
}
