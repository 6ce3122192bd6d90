import CisternCore

/// One incarnation of a node's process. Killing a node ends its process: its
/// timers never fire, messages to and from it are dropped, its disk handles and
/// transport go dead, and its suspended tasks are never resumed. A restart creates
/// a new process that boots from the node's disk.
public final class SimProcess: @unchecked Sendable {
    public enum Status: Sendable, Equatable { case running, paused, dead }

    public unowned(unsafe) let node: SimNode
    public let incarnation: UInt64
    public internal(set) var status: Status = .running
    unowned(unsafe) let world: SimWorld
    private var held: [() -> Void] = []

    public private(set) var runtime: SimRuntime!
    public private(set) var transport: SimTransport!
    public private(set) var disk: SimDisk!
    public private(set) var kv: SimKV!
    /// Objects the booted services keep alive for the life of the process.
    public var retained: [AnyObject] = []

    init(node: SimNode, incarnation: UInt64, world: SimWorld) {
        self.node = node
        self.incarnation = incarnation
        self.world = world
        runtime = SimRuntime(process: self)
        transport = SimTransport(process: self)
        disk = SimDisk(process: self)
        kv = SimKV(process: self)
    }

    public var isRunning: Bool { status == .running }
    public var isDead: Bool { status == .dead }

    /// Runs `action` after `nanoseconds` of virtual time if this process is alive then;
    /// if it is paused, the action waits for resume.
    func schedule(after nanoseconds: UInt64, _ action: @escaping () -> Void) {
        world.executor.schedule(after: nanoseconds) { [self] in fire(action) }
    }

    func schedule(at deadline: UInt64, _ action: @escaping () -> Void) {
        world.executor.schedule(at: deadline) { [self] in fire(action) }
    }

    func fire(_ action: @escaping () -> Void) {
        switch status {
        case .running: action()
        case .paused: held.append(action)
        case .dead: break
        }
    }

    func resume() {
        guard status == .paused else { return }
        status = .running
        let actions = held
        held.removeAll()
        for action in actions { world.executor.schedule(after: 0) { [self] in fire(action) } }
    }

    func kill() {
        status = .dead
        held.removeAll()
        transport.dropPending()
        retained.removeAll()
    }

    /// Starts a task of this process on the simulator thread.
    func spawn(_ operation: sending @escaping () async -> Void) {
        guard status != .dead else { return }
        _ = Task(executorPreference: world.executor) { await operation() }
    }
}
