import Synchronization

/// Keeps serial executors alive for the life of the process, for event-loop types
/// whose `executor` is a wrapper object (an `UnownedSerialExecutor` does not retain).
final class ExecutorKeeper: Sendable {
    static let shared = ExecutorKeeper()
    private let executors = Mutex<[any SerialExecutor]>([])

    func retain(_ executor: any SerialExecutor) -> any SerialExecutor {
        executors.withLock { $0.append(executor) }
        return executor
    }
}
