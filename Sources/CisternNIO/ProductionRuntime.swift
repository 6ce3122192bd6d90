import CisternCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The `Runtime` of a real node: the monotonic system clock, real sleeps, tasks on
/// the global concurrent pool, loggers that write lines to standard error, and actor
/// executors that are SwiftNIO event loops.
///
/// Promises:
/// - `nowNanoseconds()` never goes backwards (it reads the monotonic clock).
/// - `sleep(nanoseconds:)` throws `CancellationError` when the calling task is cancelled.
/// - `random(_:)` is reproducible for a given `baseSeed`, node name and stream label;
///   pass the seed a failure report printed to replay a run's random choices.
/// - `makeActorExecutor()` returns an event loop of `MultiThreadedEventLoopGroup.singleton`,
///   which lives as long as the process, so the unowned reference stays valid.
public struct ProductionRuntime: Runtime {
    public let nodeName: String
    /// The seed every random stream of this runtime is forked from.
    public let baseSeed: UInt64
    /// The level of the loggers this runtime makes.
    public let logLevel: Logger.Level
    /// Calls of `freshRandom`, shared by copies of this runtime.
    private let freshCalls = FreshCalls()

    final class FreshCalls: Sendable {
        let count = Mutex<UInt64>(0)
        func next() -> UInt64 { count.withLock { n in defer { n += 1 }; return n } }
    }

    /// - Parameters:
    ///   - nodeName: the node's name, printed in every log line.
    ///   - baseSeed: the root of every random stream; drawn from the system generator by default.
    ///   - logLevel: the minimum level loggers print.
    public init(nodeName: String, baseSeed: UInt64? = nil, logLevel: Logger.Level = .info) {
        var system = SystemRandomNumberGenerator()
        self.nodeName = nodeName
        self.baseSeed = baseSeed ?? system.next()
        self.logLevel = logLevel
    }

    public func nowNanoseconds() -> UInt64 {
        NIODeadline.now().uptimeNanoseconds
    }

    public func wallClockNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(max(0, ts.tv_sec)) * 1_000_000_000 + UInt64(max(0, ts.tv_nsec))
    }

    public func sleep(nanoseconds: UInt64) async throws {
        try await Task.sleep(nanoseconds: nanoseconds)
    }

    public func spawn(_ name: String, _ operation: sending @escaping () async -> Void) {
        Task { await operation() }
    }

    public func random(_ stream: String) -> DeterministicRandom {
        DeterministicRandom(seed: baseSeed).fork("\(nodeName)/\(stream)")
    }

    public func freshRandom(_ stream: String) -> DeterministicRandom {
        random(stream).fork("#\(freshCalls.next())")
    }

    public func logger(_ label: String) -> Logger {
        let node = nodeName
        let level = logLevel
        return Logger(label: label) { label in
            ClockLogHandler(
                label: label, node: node, level: level,
                now: { NIODeadline.now().uptimeNanoseconds },
                sink: { line, _ in ProductionRuntime.writeToStandardError(line) })
        }
    }

    public func makeActorExecutor() -> UnownedSerialExecutor {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        // NIOPosix's event loops are serial executors themselves: the unowned reference
        // then points at the loop, which the singleton group keeps alive for the process.
        if let serial = loop as? any SerialExecutor {
            return serial.asUnownedSerialExecutor()
        }
        // Another EventLoop type: `executor` may be a fresh wrapper, so keep it alive.
        return ExecutorKeeper.shared.retain(loop.executor).asUnownedSerialExecutor()
    }

    /// Writes `line` and a newline to standard error with one `write(2)` call, so
    /// concurrent lines do not interleave.
    static func writeToStandardError(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
    }
}
