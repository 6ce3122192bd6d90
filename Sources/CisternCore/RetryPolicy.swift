/// How a loop that retries waits: at most `attemptsMax` attempts, the first at once,
/// then delays that double from `firstDelayNanoseconds` up to `delayNanosecondsMax`,
/// optionally jittered. A value the retry loops share: each keeps its own control
/// flow (which server next, which answers end it) and asks the policy how many
/// attempts it has and how long to wait before each.
public struct RetryPolicy: Hashable, Sendable, CustomStringConvertible {
    public var attemptsMax: Int {
        didSet { attemptsMax = max(1, attemptsMax) }
    }
    public var firstDelayNanoseconds: UInt64
    public var delayNanosecondsMax: UInt64
    /// Whether a wait is drawn between half the delay and the whole of it (so
    /// concurrent callers that failed together do not retry in lockstep).
    public var jitter: Bool

    /// `attemptsMax` below 1 counts as 1; a first delay above the cap is the cap.
    public init(attemptsMax: Int, firstDelayNanoseconds: UInt64, delayNanosecondsMax: UInt64, jitter: Bool = false) {
        self.attemptsMax = max(1, attemptsMax)
        self.firstDelayNanoseconds = min(firstDelayNanoseconds, delayNanosecondsMax)
        self.delayNanosecondsMax = delayNanosecondsMax
        self.jitter = jitter
    }

    /// The same waits every time: `delayNanoseconds` before each retry.
    public static func fixed(attemptsMax: Int, delayNanoseconds: UInt64) -> RetryPolicy {
        RetryPolicy(attemptsMax: attemptsMax, firstDelayNanoseconds: delayNanoseconds, delayNanosecondsMax: delayNanoseconds)
    }

    /// The attempts' numbers, 0 first.
    public var attempts: Range<Int> { 0..<attemptsMax }

    /// The un-jittered wait before attempt `attempt` (0-based): none before the first,
    /// `firstDelayNanoseconds` before the second, doubling after, at most the cap.
    public func delayNanoseconds(beforeAttempt attempt: Int) -> UInt64 {
        guard attempt > 0 else { return 0 }
        let first = firstDelayNanoseconds
        guard first > 0 else { return 0 }
        // Doubling past 64 bits is past the cap.
        let shift = attempt - 1
        if shift > first.leadingZeroBitCount { return delayNanosecondsMax }
        return min(first << UInt64(shift), delayNanosecondsMax)
    }

    /// The wait before attempt `attempt`, jittered from `rng` when the policy says so
    /// (between half the delay and the whole of it).
    public func delayNanoseconds(beforeAttempt attempt: Int, using rng: inout some RandomNumberGenerator) -> UInt64 {
        let delay = delayNanoseconds(beforeAttempt: attempt)
        guard jitter, delay > 0 else { return delay }
        return delay / 2 + UInt64.random(in: 0...delay, using: &rng) / 2
    }

    /// Sleeps on `runtime` the un-jittered wait before `attempt`; ends early (without
    /// an error) when the task is cancelled, so the loop's next check decides.
    public func wait(beforeAttempt attempt: Int, on runtime: any Runtime) async {
        let delay = delayNanoseconds(beforeAttempt: attempt)
        if delay > 0 { try? await runtime.sleep(nanoseconds: delay) }
    }

    public var description: String {
        "\(attemptsMax) attempts, waits from \(firstDelayNanoseconds / 1_000_000) ms doubling to \(delayNanosecondsMax / 1_000_000) ms\(jitter ? ", jittered" : "")"
    }
}
