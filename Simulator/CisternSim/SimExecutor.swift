import CisternCore
import DequeModule
import HeapModule
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The simulator's only executor: every actor and every task of a simulated world
/// runs here, on one thread, in a deterministic order. Time is virtual: when no job
/// is ready the clock jumps to the next timer.
///
/// The tripwire: a job or timer enqueued from any other thread means some code
/// escaped the simulator (a bare `Task {}`, `Task.detached`, a Dispatch queue, a
/// thread). The run is failed with `SimError.tripwire`.
public final class SimExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    /// How the ready queue picks the next job. `fifo` runs jobs in the order they
    /// became ready. With a reorder probability, each pick instead takes, with that
    /// chance, a seed-drawn job among the first `windowJobs` ready ones: production
    /// runs actors on several threads, so jobs ready at the same moment run in any
    /// order there, and interleavings that actor reentrancy allows get explored here.
    /// Picks draw from the executor's own stream: the same seed gives the same order.
    public struct Scheduling: Sendable, Equatable, CustomStringConvertible {
        public var reorderProbability: Double
        public var windowJobs: Int
        public init(reorderProbability: Double, windowJobs: Int) {
            self.reorderProbability = min(max(reorderProbability, 0), 1)
            self.windowJobs = max(1, windowJobs)
        }
        public static let fifo = Scheduling(reorderProbability: 0, windowJobs: 1)
        public var isFIFO: Bool { reorderProbability == 0 || windowJobs <= 1 }
        /// A seed-drawn shuffled scheduling: reorder probability 0.05...0.5, a window
        /// of 2...16 jobs.
        public static func drawn(_ random: inout DeterministicRandom) -> Scheduling {
            let p = [0.05, 0.1, 0.2, 0.35, 0.5][Int(random.next() % 5)]
            let w = [2, 4, 8, 16][Int(random.next() % 4)]
            return Scheduling(reorderProbability: p, windowJobs: w)
        }
        public var description: String { isFIFO ? "fifo" : "shuffled(p=\(reorderProbability), window=\(windowJobs))" }
    }

    public private(set) var scheduling = Scheduling.fifo
    private var scheduleRandom = DeterministicRandom(seed: 0)
    /// Picks that took a job other than the oldest ready one.
    public private(set) var jobsReordered: UInt64 = 0

    /// Sets how jobs are picked (before the run; picks draw from `random`).
    public func setScheduling(_ scheduling: Scheduling, random: DeterministicRandom) {
        self.scheduling = scheduling
        self.scheduleRandom = random
    }

    private var ready = Deque<UnownedJob>()
    private var timers = Heap<SimTimer>()
    private var timerSequence: UInt64 = 0
    /// Virtual nanoseconds since the world began.
    public private(set) var nowNanoseconds: UInt64 = 0
    /// Jobs run so far (a cost measure for reports).
    public private(set) var jobsRun: UInt64 = 0
    public private(set) var timersFired: UInt64 = 0

    private var owner: pthread_t?
    private let foreign = Mutex<[UnownedJob]>([])
    private let trippedFlag = Atomic<Bool>(false)
    private let tripReason = Mutex<String?>(nil)

    public init() {}

    /// Whether something touched the simulator from another thread.
    public var tripped: String? { trippedFlag.load(ordering: .acquiring) ? tripReason.withLock { $0 } : nil }

    @inline(__always)
    public var isOnSimulatorThread: Bool {
        guard let owner else { return false }
        return pthread_equal(owner, pthread_self()) != 0
    }

    func trip(_ reason: String) {
        tripReason.withLock { if $0 == nil { $0 = reason } }
        trippedFlag.store(true, ordering: .releasing)
    }

    // MARK: Executor conformance

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if isOnSimulatorThread {
            ready.append(unowned)
        } else {
            trip("a job was enqueued from a thread other than the simulator's (a bare Task {}, Task.detached, Dispatch or a thread escaped the runtime seam)")
            foreign.withLock { $0.append(unowned) }
        }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    public func checkIsolated() {
        if !isOnSimulatorThread { trip("checkIsolated called off the simulator thread") }
    }

    // MARK: Timers

    /// Runs `action` on the simulator thread at `deadline` (virtual nanoseconds).
    /// Timers with the same deadline fire in the order they were scheduled.
    public func schedule(at deadline: UInt64, _ action: @escaping () -> Void) {
        if !isOnSimulatorThread {
            trip("a timer was scheduled from a thread other than the simulator's")
            return
        }
        timerSequence &+= 1
        timers.insert(SimTimer(deadline: max(deadline, nowNanoseconds), sequence: timerSequence, action: action))
    }

    public func schedule(after nanoseconds: UInt64, _ action: @escaping () -> Void) {
        let (sum, overflow) = nowNanoseconds.addingReportingOverflow(nanoseconds)
        schedule(at: overflow ? UInt64.max : sum, action)
    }

    /// The deadline of the earliest pending timer.
    public var nextDeadline: UInt64? { timers.min?.deadline }
    public var hasReadyJobs: Bool { !ready.isEmpty }

    // MARK: Running

    /// Why `run` returned.
    public enum Stop: Equatable, Sendable {
        /// Virtual time reached the limit.
        case timeLimit
        /// Nothing is ready and no timer is pending.
        case quiescent
        /// `shouldStop` returned true.
        case condition
        case tripwire(String)
    }

    /// Makes the calling thread the simulator thread. Call once, before any job
    /// is enqueued, from the thread that will call `run`.
    public func adoptCurrentThread() {
        owner = pthread_self()
    }

    /// Runs jobs and timers until virtual time would pass `limitNanoseconds`, nothing
    /// is left, or `shouldStop` (checked between steps) returns true.
    public func run(untilNanoseconds limitNanoseconds: UInt64, shouldStop: () -> Bool = { false }) -> Stop {
        precondition(isOnSimulatorThread, "SimExecutor.run must be called on the thread that adopted it")
        let serial = asUnownedSerialExecutor()
        let task = asUnownedTaskExecutor()
        var checkCounter = 0
        while true {
            if trippedFlag.load(ordering: .relaxed) { return .tripwire(tripped ?? "tripwire") }
            if let job = nextJob() {
                jobsRun &+= 1
                job.runSynchronously(isolatedTo: serial, taskExecutor: task)
                checkCounter &+= 1
                if checkCounter & 63 == 0, shouldStop() { return .condition }
                continue
            }
            if shouldStop() { return .condition }
            guard let next = timers.min else { return .quiescent }
            if next.deadline > limitNanoseconds {
                nowNanoseconds = max(nowNanoseconds, limitNanoseconds)
                return .timeLimit
            }
            let timer = timers.removeMin()
            nowNanoseconds = timer.deadline
            timersFired &+= 1
            timer.action()
        }
    }

    @inline(__always)
    private func nextJob() -> UnownedJob? {
        if scheduling.reorderProbability > 0, ready.count > 1, scheduleRandom.chance(scheduling.reorderProbability) {
            let i = Int(scheduleRandom.next() % UInt64(min(scheduling.windowJobs, ready.count)))
            if i > 0 {
                jobsReordered &+= 1
                return ready.remove(at: i)
            }
        }
        return ready.popFirst()
    }

    /// Drops every pending job and timer (used when a world is torn down).
    public func discardAll() {
        ready.removeAll()
        timers = Heap()
    }
}

struct SimTimer: Comparable {
    let deadline: UInt64
    let sequence: UInt64
    let action: () -> Void

    static func < (a: SimTimer, b: SimTimer) -> Bool {
        (a.deadline, a.sequence) < (b.deadline, b.sequence)
    }

    static func == (a: SimTimer, b: SimTimer) -> Bool {
        a.deadline == b.deadline && a.sequence == b.sequence
    }
}
