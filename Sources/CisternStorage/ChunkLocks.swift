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

extension Chain {
    /// Targets that receive writes (SERVING, then SYNCING), in chain order.
    public var writeTargets: [ChainTarget] { targets.filter { $0.state.receivesWrites } }

    /// The target after `target` among those receiving writes, if any.
    public func successor(of target: TargetID) -> ChainTarget? {
        let writers = writeTargets
        guard let i = writers.firstIndex(where: { $0.target == target }), i + 1 < writers.count else { return nil }
        return writers[i + 1]
    }

    public func state(of target: TargetID) -> PublicState? { targets.first { $0.target == target }?.state }
}

import CisternRouting
