import Synchronization

extension Runtime {
    /// Runs `body` for every item, at most `limit` at once, as tasks of this runtime
    /// (so the simulator runs them on its thread, in a reproducible order), and returns
    /// the results in item order. With `limit` 1 or a single item it runs inline.
    ///
    /// If the node dies while work is outstanding (the simulator drops its tasks), the
    /// caller, which belongs to the same node, never resumes, like every other task of
    /// that node.
    public func concurrentMap<T: Sendable, R: Sendable>(
        _ items: [T], limit: Int, _ body: @escaping @Sendable (T) async -> R
    ) async -> [R] {
        if items.count <= 1 || limit <= 1 {
            var out: [R] = []
            out.reserveCapacity(items.count)
            for item in items { out.append(await body(item)) }
            return out
        }
        let fan = FanIn<R>(count: items.count)
        return await withCheckedContinuation { (continuation: CheckedContinuation<[R], Never>) in
            fan.setContinuation(continuation)
            for _ in 0..<min(limit, items.count) {
                spawn("concurrent-map") {
                    while let i = fan.claim() {
                        let r = await body(items[i])
                        fan.finish(i, r)
                    }
                }
            }
        }
    }
}

/// The shared state of one `concurrentMap`: the next item to claim, the results, and
/// the caller's continuation, resumed once by whichever worker finishes last.
private final class FanIn<R: Sendable>: Sendable {
    private struct State: ~Copyable {
        var next = 0
        var done = 0
        var results: [R?]
        var continuation: CheckedContinuation<[R], Never>?
    }
    private let state: Mutex<State>
    private let count: Int

    init(count: Int) {
        self.count = count
        self.state = Mutex(State(results: Array(repeating: nil, count: count)))
    }

    func setContinuation(_ c: CheckedContinuation<[R], Never>) {
        state.withLock { $0.continuation = c }
    }

    func claim() -> Int? {
        state.withLock { s -> Int? in
            guard s.next < count else { return nil }
            defer { s.next += 1 }
            return s.next
        }
    }

    func finish(_ i: Int, _ r: R) {
        let ready = state.withLock { s -> (CheckedContinuation<[R], Never>, [R])? in
            s.results[i] = r
            s.done += 1
            guard s.done == count, let c = s.continuation else { return nil }
            s.continuation = nil
            return (c, s.results.map { $0! })
        }
        if let (c, results) = ready { c.resume(returning: results) }
    }
}
