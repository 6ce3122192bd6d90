import Synchronization

/// A mutual-exclusion lock for async code that hands ownership to waiters in arrival
/// order (FIFO), so no waiter starves.
///
/// Waiting is not cancellable: a cancelled task still waits its turn (the critical
/// sections it guards are short and always end).
public final class AsyncFIFOLock: Sendable {
    private struct State: ~Copyable {
        var locked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var head = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Waits until this caller owns the lock.
    public func lock() async {
        let acquired = state.withLock { state -> Bool in
            if state.locked { return false }
            state.locked = true
            return true
        }
        if acquired { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { state -> Bool in
                if !state.locked {
                    state.locked = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    /// Releases the lock, handing it directly to the longest waiter if there is one.
    public func unlock() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            precondition(state.locked, "AsyncFIFOLock unlocked while not locked")
            guard state.head < state.waiters.count else {
                state.locked = false
                state.waiters.removeAll(keepingCapacity: true)
                state.head = 0
                return nil
            }
            let next = state.waiters[state.head]
            state.head += 1
            if state.head >= 64 && state.head * 2 >= state.waiters.count {
                state.waiters.removeFirst(state.head)
                state.head = 0
            }
            return next  // ownership passes to `next`; `locked` stays true
        }
        next?.resume()
    }
}
