import CisternRouting

/// One lock per (target, chunk): the head serializes writes to a chunk, and each
/// replica applies a chunk's versions one at a time.
struct ChunkLocks {
    struct Key: Hashable {
        let target: UInt64
        let chunk: ChunkID
    }

    private var held: Set<Key> = []
    private var waiters: [Key: [UnsafeContinuation<Void, Never>]] = [:]

    /// Takes the lock if it is free.
    mutating func tryAcquire(_ key: Key) -> Bool { held.insert(key).inserted }

    /// Queues `waiter` to be resumed when the lock is handed to it.
    mutating func enqueue(_ key: Key, _ waiter: UnsafeContinuation<Void, Never>) {
        waiters[key, default: []].append(waiter)
    }

    /// Hands the lock to the next waiter, or frees it.
    mutating func release(_ key: Key) -> UnsafeContinuation<Void, Never>? {
        if var queue = waiters[key], !queue.isEmpty {
            let next = queue.removeFirst()
            waiters[key] = queue.isEmpty ? nil : queue
            return next
        }
        held.remove(key)
        return nil
    }
}
