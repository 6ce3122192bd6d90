import CisternCore

/// The primary-election rule, as a value type. The lease lives in the transactional
/// KV as a `LeaseRecord`; a holder renews it by rewriting it with a new `renewal`.
///
/// A holder may act as primary until `renewalStart + duration - margin`, timed by its
/// own clock from when it *began* the renewal that committed. A competitor may take
/// the lease over only after it has watched the same record, unchanged, for
/// `duration + margin` by its clock. Since the competitor first saw that record after
/// it was committed (so after the holder began writing it), the holder's validity
/// ends at least `2 * margin` before any takeover; the takeover itself is a
/// serializable transaction that read the lease, so a concurrent renewal makes one of
/// the two fail. Clocks must not drift apart by more than `margin` within a lease.
public struct LeaseTracker: Sendable {
    public let me: NodeID
    public let durationNanoseconds: UInt64
    public let marginNanoseconds: UInt64
    /// How long another holder's record must stay unchanged before a takeover.
    public let takeoverAfterNanoseconds: UInt64
    private var observed: LeaseRecord?
    private var observedSince: UInt64 = 0
    private var everObserved = false

    /// `takeoverAfterNanoseconds` is for checker self-tests only: anything below
    /// duration + margin breaks the single-primary guarantee on purpose.
    public init(me: NodeID, durationNanoseconds: UInt64, marginNanoseconds: UInt64, takeoverAfterNanoseconds: UInt64? = nil) {
        precondition(durationNanoseconds > 2 * marginNanoseconds, "the lease must outlast twice its safety margin")
        self.me = me
        self.durationNanoseconds = durationNanoseconds
        self.marginNanoseconds = marginNanoseconds
        self.takeoverAfterNanoseconds = takeoverAfterNanoseconds ?? (durationNanoseconds + marginNanoseconds)
    }

    /// What to write, given the record read in the current transaction.
    public enum Decision: Sendable, Equatable {
        /// Write `record`: a renewal of our own lease, or a takeover of an absent or
        /// expired one (`acquired` is then true).
        case write(LeaseRecord, acquired: Bool)
        /// Another node holds a live lease.
        case wait(holder: NodeID)
    }

    /// Notes the record read at `now` (from our clock), and decides.
    public mutating func decide(current: LeaseRecord?, now: UInt64) -> Decision {
        if current != observed || !everObserved {
            observed = current
            observedSince = now
            everObserved = true
        }
        guard let current else {
            return .write(LeaseRecord(holder: me, epoch: 1, renewal: 0, durationNanoseconds: durationNanoseconds), acquired: true)
        }
        if current.holder == me {
            var next = current
            next.renewal &+= 1
            next.durationNanoseconds = durationNanoseconds
            return .write(next, acquired: false)
        }
        let wait = takeoverAfterNanoseconds == durationNanoseconds + marginNanoseconds
            ? current.durationNanoseconds &+ marginNanoseconds : takeoverAfterNanoseconds
        let expiresAt = observedSince &+ wait
        if now >= expiresAt {
            return .write(LeaseRecord(holder: me, epoch: current.epoch &+ 1, renewal: 0, durationNanoseconds: durationNanoseconds), acquired: true)
        }
        return .wait(holder: current.holder)
    }

    /// Until when a holder whose renewal began at `renewalStart` may act as primary.
    public func validUntil(renewalStart: UInt64) -> UInt64 {
        renewalStart &+ durationNanoseconds &- marginNanoseconds
    }
}
