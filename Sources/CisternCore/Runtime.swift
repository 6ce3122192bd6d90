import Logging

/// The seam for everything about time, randomness and concurrency. Component code
/// reads the clock, sleeps, spawns tasks, draws random numbers and logs only
/// through a `Runtime`, so the simulator can run it in virtual time on one thread.
public protocol Runtime: Sendable {
    /// Monotonic nanoseconds on this runtime's clock. In the simulator this is
    /// virtual time since the world started; it never goes backwards.
    func nowNanoseconds() -> UInt64

    /// Suspends for `nanoseconds` of this runtime's time. Throws `CancellationError`
    /// when the calling task is cancelled.
    func sleep(nanoseconds: UInt64) async throws

    /// Starts `operation` as a new top-level task of this node. In the simulator the
    /// task runs on the simulator thread and is dropped when the node is killed.
    func spawn(_ name: String, _ operation: sending @escaping () async -> Void)

    /// A reproducible random stream for `stream` (for example "register.client"):
    /// the same node, label and seed always give the same sequence.
    func random(_ stream: String) -> DeterministicRandom

    /// A stream of its own on every call: the n-th call with a label gets the n-th
    /// fork of `random(label)`. For work that runs many times at once (the backoff
    /// jitter of concurrent retries), which would otherwise draw the same numbers
    /// and move in lockstep. Still reproducible: the simulator counts calls in its
    /// deterministic order.
    func freshRandom(_ stream: String) -> DeterministicRandom

    /// A logger whose timestamps come from this runtime's clock.
    func logger(_ label: String) -> Logger

    /// The executor a component actor must run on (`nonisolated let unownedExecutor`).
    /// The simulator returns its single-thread executor; production returns an event loop.
    func makeActorExecutor() -> UnownedSerialExecutor

    /// The name of the node this runtime belongs to (for logs and traces).
    var nodeName: String { get }

    /// A fault point (FoundationDB's BUGGIFY): true when the simulator chose to make
    /// the rare path named `point` happen now (a delay, a retryable error, a smaller
    /// batch: only what production could also do). Production answers false; the
    /// simulator enables a seed-drawn subset of the points a run meets and fires each
    /// enabled one at a seed-drawn rate, and reports which fired.
    func faultPoint(_ point: StaticString) -> Bool

    /// Nanoseconds since the Unix epoch, for what people read as dates (a file's
    /// modification time). Never for timeouts or ordering: it may jump. The
    /// simulator answers its virtual time (deterministic); production the real clock.
    func wallClockNanoseconds() -> UInt64
}

extension Runtime {
    public func faultPoint(_ point: StaticString) -> Bool { false }
    public func wallClockNanoseconds() -> UInt64 { nowNanoseconds() }
}

extension Runtime {
    /// Runs `operation`, failing with `timedOut` if it takes longer than `nanoseconds`.
    public func sleep(milliseconds: UInt64) async throws {
        try await sleep(nanoseconds: milliseconds * 1_000_000)
    }
}
