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
            if let job = ready.popFirst() {
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
