import Synchronization

/// Caps the requests in flight to each destination: `acquire` waits (FIFO) while
/// `perKeyMax` are outstanding to that key. Used by clients so a large batch cannot
/// flood one server while others sit idle.
public final class InFlightLimiter<Key: Hashable & Sendable>: Sendable {
    private struct Slot {
        var inFlight = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let slots = Mutex<[Key: Slot]>([:])
    public let perKeyMax: Int

    public init(perKeyMax: Int) {
        precondition(perKeyMax > 0, "an in-flight limit must be at least 1")
        self.perKeyMax = perKeyMax
    }

    /// Waits until a request to `key` may start.
    public func acquire(_ key: Key) async {
        let granted = slots.withLock { s -> Bool in
            if s[key, default: Slot()].inFlight < perKeyMax {
                s[key, default: Slot()].inFlight += 1
                return true
            }
            return false
        }
        if granted { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = slots.withLock { s -> Bool in
                if s[key, default: Slot()].inFlight < perKeyMax {
                    s[key, default: Slot()].inFlight += 1
                    return true
                }
                s[key, default: Slot()].waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Ends a request to `key`, handing its place to the longest waiter.
    public func release(_ key: Key) {
        let next = slots.withLock { s -> CheckedContinuation<Void, Never>? in
            guard var slot = s[key] else { return nil }
            if !slot.waiters.isEmpty {
                let c = slot.waiters.removeFirst()
                s[key] = slot
                return c
            }
            slot.inFlight -= 1
            if slot.inFlight == 0 { s[key] = nil } else { s[key] = slot }
            return nil
        }
        next?.resume()
    }

    /// Requests in flight to `key` now.
    public func inFlight(_ key: Key) -> Int { slots.withLock { $0[key]?.inFlight ?? 0 } }
}
