import Synchronization

/// Counts the requests one inbound connection is running, so it can refuse more
/// than `TCPTransportLimits.inFlightCallsPerConnectionMax`.
final class TCPInFlightCounter: Sendable {
    private let count = Mutex(0)

    /// Takes a slot; false when all `limit` are taken.
    func tryAcquire(limit: Int) -> Bool {
        count.withLock { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    func release() {
        count.withLock { $0 -= 1 }
    }
}
