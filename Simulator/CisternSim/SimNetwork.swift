import CisternCore

/// The simulated network: routes messages between addresses with sampled latency,
/// loss, duplication and reordering; applies symmetric and one-way partitions and
/// clogging; follows address changes (a message to an address nobody holds is lost,
/// one to a dead process is refused).
public final class SimNetwork: @unchecked Sendable {
    struct Link: Hashable {
        let from: NodeID
        let to: NodeID
    }

    /// One address on the network. Transports cache endpoints instead of addresses,
    /// so routing a message is a pointer dereference; when a node moves, its old
    /// endpoint is emptied and messages to it are lost.
    final class Endpoint: @unchecked Sendable {
        let address: NodeAddress
        var node: SimNode?
        init(address: NodeAddress) { self.address = address }
    }

    public var config: NetworkConfig
    unowned(unsafe) let world: SimWorld
    var rng: DeterministicRandom
    private var endpoints: [NodeAddress: Endpoint] = [:]
    private var blocked: Set<Link> = []
    private var clogUntil: [NodeID: UInt64] = [:]
    public private(set) var messagesSent: UInt64 = 0
    public private(set) var messagesDropped: UInt64 = 0

    init(world: SimWorld, config: NetworkConfig, rng: DeterministicRandom) {
        self.world = world
        self.config = config
        self.rng = rng
    }

    /// The endpoint for `address` (created empty if nobody ever held it).
    func endpoint(_ address: NodeAddress) -> Endpoint {
        if let e = endpoints[address] { return e }
        let e = Endpoint(address: address)
        endpoints[address] = e
        return e
    }

    func bind(_ address: NodeAddress, to node: SimNode) { endpoint(address).node = node }
    func unbind(_ address: NodeAddress) { endpoints[address]?.node = nil }
    func node(at address: NodeAddress) -> SimNode? { endpoints[address]?.node }

    // MARK: Faults

    /// Blocks messages from every node in `from` to every node in `to`; unless
    /// `oneWay`, the reverse direction too.
    public func partition(_ from: [NodeID], _ to: [NodeID], oneWay: Bool = false) {
        for a in from {
            for b in to where a != b {
                blocked.insert(Link(from: a, to: b))
                if !oneWay { blocked.insert(Link(from: b, to: a)) }
            }
        }
    }

    /// Reopens the links `partition(from, to, oneWay:)` closed. (Links closed by
    /// another, overlapping partition reopen too.)
    public func unpartition(_ from: [NodeID], _ to: [NodeID], oneWay: Bool = false) {
        for a in from {
            for b in to {
                blocked.remove(Link(from: a, to: b))
                if !oneWay { blocked.remove(Link(from: b, to: a)) }
            }
        }
    }

    /// Removes every partition.
    public func healPartitions() { blocked.removeAll() }

    public func isBlocked(from: NodeID, to: NodeID) -> Bool { !blocked.isEmpty && blocked.contains(Link(from: from, to: to)) }

    /// Delays every message from or to `node` until `untilNanoseconds`.
    public func clog(_ node: NodeID, untilNanoseconds: UInt64) {
        clogUntil[node] = max(clogUntil[node] ?? 0, untilNanoseconds)
    }

    public func unclogAll() { clogUntil.removeAll() }

    // MARK: Delivery

    func sampleLatency() -> UInt64 {
        var ns = config.latencyMinNanoseconds
        if config.latencyMeanExtraNanoseconds > 0 {
            let u = max(rng.unit(), 1e-12)
            ns &+= UInt64(min(-Double(config.latencyMeanExtraNanoseconds) * log(u), 1e12))
        }
        if config.reorderProbability > 0, rng.chance(config.reorderProbability) {
            ns &+= UInt64(rng.unit() * 10 * Double(config.latencyMinNanoseconds &+ config.latencyMeanExtraNanoseconds))
        }
        return ns
    }

    /// Sends one message from `sender` to whoever holds `address` when it arrives.
    /// `deliver` runs on arrival at a running process; `refused` runs (after a
    /// round trip) when the address belongs to a node whose process is dead.
    func transmit(
        from sender: SimProcess, to endpoint: Endpoint, tag: UInt64, bytes: Int,
        deliver: @escaping (SimProcess) -> Void, refused: (() -> Void)? = nil
    ) {
        guard sender.status == .running else { return }
        messagesSent &+= 1
        let executor = world.executor
        let now = executor.nowNanoseconds
        let fromID = sender.node.id
        world.trace.record(.send, at: now, UInt64(fromID.rawValue), tag, UInt64(bytes))
        if config.lossProbability > 0, rng.chance(config.lossProbability) {
            messagesDropped &+= 1
            world.trace.record(.drop, at: now, UInt64(fromID.rawValue), tag)
            return
        }
        let copies = (config.duplicateProbability > 0 && rng.chance(config.duplicateProbability)) ? 2 : 1
        for copy in 0..<copies {
            var at = now &+ sampleLatency()
            if !clogUntil.isEmpty {
                if let c = clogUntil[fromID], c > at { at = c }
                if let dest = endpoint.node, let c = clogUntil[dest.id], c > at { at = c }
            }
            if copy == 1 { world.trace.record(.duplicate, at: now, tag) }
            executor.schedule(at: at) { [unowned(unsafe) self] in
                self.arrive(from: fromID, sender: sender, to: endpoint, tag: tag, deliver: deliver, refused: refused)
            }
        }
    }

    private func arrive(
        from fromID: NodeID, sender: SimProcess, to endpoint: Endpoint, tag: UInt64,
        deliver: @escaping (SimProcess) -> Void, refused: (() -> Void)?
    ) {
        let now = world.executor.nowNanoseconds
        guard let dest = endpoint.node else {
            messagesDropped &+= 1
            world.trace.record(.drop, at: now, UInt64(fromID.rawValue), tag, 1)
            return
        }
        if !blocked.isEmpty, blocked.contains(Link(from: fromID, to: dest.id)) {
            messagesDropped &+= 1
            world.trace.record(.drop, at: now, UInt64(fromID.rawValue), tag, 2)
            return
        }
        guard let process = dest.process, process.status != .dead else {
            world.trace.record(.drop, at: now, UInt64(fromID.rawValue), tag, 3)
            // Connection refused: the sender learns after the way back, if that way is open.
            if let refused, !isBlocked(from: dest.id, to: fromID) {
                sender.schedule(after: sampleLatency(), refused)
            }
            return
        }
        world.trace.record(.deliver, at: now, UInt64(fromID.rawValue), UInt64(dest.id.rawValue), tag)
        if process.status == .running {
            deliver(process)
        } else {
            process.fire { deliver(process) }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
