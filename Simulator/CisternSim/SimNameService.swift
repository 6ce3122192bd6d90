import CisternCore

/// The simulated name service: node identity to current addresses. After an address
/// change it may keep answering the old address for `nameServiceDelayNanoseconds`,
/// like a DNS record with a TTL.
final class SimNameService {
    struct Entry {
        var current: [NodeAddress]
        var previous: [NodeAddress]
        var changedAt: UInt64
    }

    private var entries: [NodeID: Entry] = [:]

    func register(_ node: NodeID, _ addresses: [NodeAddress], now: UInt64) {
        if let old = entries[node] {
            entries[node] = Entry(current: addresses, previous: old.current, changedAt: now)
        } else {
            entries[node] = Entry(current: addresses, previous: addresses, changedAt: now)
        }
    }

    func lookup(_ node: NodeID, now: UInt64, delayNanoseconds: UInt64) -> [NodeAddress]? {
        guard let e = entries[node] else { return nil }
        return now >= e.changedAt &+ delayNanoseconds ? e.current : e.previous
    }
}

/// The `Resolver` of a simulated process: asks the world's name service, with the
/// lookup's latency on the process's clock.
public struct SimResolver: Resolver, @unchecked Sendable {
    unowned let process: SimProcess

    public func resolve(_ node: NodeID) async throws(TransportError) -> [NodeAddress] {
        let world = process.world
        do {
            try await process.runtime.sleep(nanoseconds: world.network.config.nameLookupNanoseconds)
        } catch {
            throw .shutdown
        }
        guard let found = world.nameService.lookup(node, now: world.executor.nowNanoseconds, delayNanoseconds: world.network.config.nameServiceDelayNanoseconds),
              !found.isEmpty
        else {
            throw .unreachable(node: node, reason: "the name service has no address for \(node)")
        }
        return found
    }
}
