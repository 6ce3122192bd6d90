import CisternConformance
import CisternCore
import CisternSim
import Testing

/// Runs a conformance suite inside a simulated world and returns its failure, if any.
func simulateSuite(seed: UInt64, kv: KVConfig = KVConfig(), _ suite: @escaping (SimWorld, SimProcess) async throws -> Void) -> String? {
    SimWorld.simulate(seed: seed, kv: kv) { world -> String? in
        let harnessNode = world.addNode(name: "harness", host: "10.9.0.1", id: NodeID(9_000))
        let process = world.start(harnessNode)
        var outcome: String? = "the suite did not finish in simulated time"
        world.spawn {
            do {
                try await suite(world, process)
                outcome = nil
            } catch {
                outcome = "\(error)"
            }
        }
        let stop = world.run(untilNanoseconds: 24 * 3_600 * 1_000_000_000)
        if case .tripwire(let reason) = stop { return "tripwire: \(reason)" }
        return outcome
    }
}

/// Simulated nodes for the Transport suite; `move` gives a node a new IP.
final class SimTransportHarness: TransportHarness, @unchecked Sendable {
    let world: SimWorld
    let runtime: any Runtime
    private var moves = 0

    init(world: SimWorld, process: SimProcess) {
        self.world = world
        self.runtime = process.runtime
    }

    private func node(_ id: NodeID) -> SimNode {
        if let n = world.node(id) { return n }
        return world.addNode(name: "n\(id.rawValue)", host: "10.1.\(id.rawValue / 250).\(id.rawValue % 250 + 1)", id: id)
    }

    func start(_ id: NodeID) async throws -> any Transport {
        let n = node(id)
        if let p = n.process, !p.isDead { return p.transport }
        return world.start(n).transport
    }

    func move(_ id: NodeID) async throws -> any Transport {
        let n = node(id)
        world.kill(n)
        moves += 1
        world.changeAddress(n, to: "10.2.\(moves / 250).\(moves % 250 + 1)")
        return world.start(n).transport
    }

    func stop(_ id: NodeID) async throws { world.kill(node(id)) }
    func finish() async {}
}

/// A fresh simulated node (and so a fresh, empty disk) per `makeDisk`.
final class SimDiskHarness: DiskHarness, @unchecked Sendable {
    let world: SimWorld
    let runtime: any Runtime
    private var disks = 0

    init(world: SimWorld, process: SimProcess) {
        self.world = world
        self.runtime = process.runtime
    }

    func makeDisk() async throws -> any Disk {
        disks += 1
        let n = world.addNode(name: "disk\(disks)", host: "10.3.0.\(disks)")
        return world.start(n).disk
    }

    func finish() async {}
}

/// Each disk is a folder of one simulated node's disk (as storage targets get).
final class SimSubdirectoryDiskHarness: DiskHarness, @unchecked Sendable {
    let world: SimWorld
    let runtime: any Runtime
    let disk: any Disk
    private var folders = 0

    init(world: SimWorld, process: SimProcess) {
        self.world = world
        self.runtime = process.runtime
        self.disk = process.disk
    }

    func makeDisk() async throws -> any Disk {
        folders += 1
        return try SubdirectoryDisk(disk, folder: "targets/t\(folders)")
    }

    func finish() async {}
}

/// The world's one simulated KV store (the suite keeps its cases on separate keys).
final class SimKVHarness: KVHarness, @unchecked Sendable {
    let runtime: any Runtime
    let process: SimProcess

    init(process: SimProcess) {
        self.process = process
        self.runtime = process.runtime
    }

    func makeStore() async throws -> any TransactionalKV { process.kv }
    func finish() async {}
}

@Suite struct SimConformanceTests {
    @Test(arguments: [UInt64(1), 2, 3])
    func simulatedTransportConforms(seed: UInt64) {
        let failure = simulateSuite(seed: seed) { world, process in
            try await TransportConformance.run(SimTransportHarness(world: world, process: process))
        }
        #expect(failure == nil)
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func simulatedDiskConforms(seed: UInt64) {
        let failure = simulateSuite(seed: seed) { world, process in
            try await DiskConformance.run(SimDiskHarness(world: world, process: process))
        }
        #expect(failure == nil)
    }

    @Test(arguments: [UInt64(1), 2])
    func subdirectoryDiskConforms(seed: UInt64) {
        let failure = simulateSuite(seed: seed) { world, process in
            try await DiskConformance.run(SimSubdirectoryDiskHarness(world: world, process: process))
        }
        #expect(failure == nil)
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func simulatedKVConforms(seed: UInt64) {
        let failure = simulateSuite(seed: seed) { _, process in
            try await KVConformance.run(SimKVHarness(process: process))
        }
        #expect(failure == nil)
    }

    @Test(arguments: [UInt64(4), 5])
    func simulatedKVConformsUnderInjectedConflictsAndMaybeCommitted(seed: UInt64) {
        var kv = KVConfig()
        kv.conflictProbability = 0.2
        kv.maybeCommittedProbability = 0.05
        let failure = simulateSuite(seed: seed, kv: kv) { _, process in
            try await KVConformance.run(SimKVHarness(process: process))
        }
        #expect(failure == nil)
    }
}
