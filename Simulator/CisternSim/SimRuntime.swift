import CisternCore
import Logging

/// The `Runtime` of a simulated process: virtual time, timers owned by the
/// process, tasks on the simulator thread, random streams derived from the world's
/// seed, node name and incarnation.
public final class SimRuntime: Runtime, @unchecked Sendable {
    unowned(unsafe) let process: SimProcess
    public let nodeName: String
    /// Calls of `freshRandom` per label (the simulator thread only touches it).
    private var freshCalls: [String: UInt64] = [:]

    init(process: SimProcess) {
        self.process = process
        self.nodeName = process.node.name
    }

    /// The node's clock (virtual time, unless a clock-skew fault moved it).
    public func nowNanoseconds() -> UInt64 { process.node.clock.local(process.world.executor.nowNanoseconds) }

    public func sleep(nanoseconds: UInt64) async throws {
        try Task.checkCancellation()
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            process.schedule(after: process.node.clock.realDelay(forLocal: nanoseconds)) { c.resume() }
        }
        try Task.checkCancellation()
    }

    public func spawn(_ name: String, _ operation: sending @escaping () async -> Void) {
        process.spawn(operation)
    }

    public func random(_ stream: String) -> DeterministicRandom {
        DeterministicRandom(seed: process.world.seed).fork("\(nodeName)#\(process.incarnation)/\(stream)")
    }

    public func freshRandom(_ stream: String) -> DeterministicRandom {
        let n = freshCalls[stream, default: 0]
        freshCalls[stream] = n + 1
        return random(stream).fork("#\(n)")
    }

    public func logger(_ label: String) -> Logger {
        let world = process.world
        let node = nodeName
        return Logger(label: label) { label in
            ClockLogHandler(
                label: label, node: node, level: world.logLevel,
                now: { [unowned world] in world.executor.nowNanoseconds },
                sink: { [unowned world] line, _ in world.log(line) })
        }
    }

    public func faultPoint(_ point: StaticString) -> Bool {
        process.world.faultPoints.fires(point, node: process.node.name)
    }

    public func makeActorExecutor() -> UnownedSerialExecutor {
        process.world.executor.asUnownedSerialExecutor()
    }
}
