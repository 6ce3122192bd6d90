import CisternCore
import CisternMeta
import CisternSim
import Testing

typealias Op = NamespaceOp

final class ModelRun: @unchecked Sendable {
    var committed: [Op] = []
    var rejected = 0
    var storeErrors: [String] = []
    var real: [String: InodeType] = [:]
    var inodeCount = 0
    var problems: [String] = []
    var done = false
}

func inspect(_ ns: Namespace, into run: ModelRun) async throws {
    let report = try await NamespaceAudit.audit(ns)
    run.real = report.tree
    run.problems = report.problems
    run.inodeCount = report.inodes
}

@Suite struct NamespaceModelCheckTests {
    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6])
    func concurrentOperationsThroughTwoServersMatchTheSequentialModel(seed: UInt64) {
        var kv = KVConfig()
        kv.conflictProbability = 0.1
        let run = SimWorld.simulate(seed: seed, kv: kv) { world -> ModelRun in
            let run = ModelRun()
            let servers = (1...2).map { i -> MetaService in
                let n = world.addNode(name: "meta\(i)", host: "10.0.0.\(i)")
                let p = world.start(n)
                return MetaService(kv: p.kv, runtime: p.runtime, policy: LayoutPolicy(table: 1, tableVersion: 1, chains: []))
            }
            let names = ["a", "b", "c"]
            var finished = 0
            for c in 0..<4 {
                let n = world.addNode(name: "client\(c)", host: "10.0.1.\(c)")
                let p = world.start(n)
                world.spawn {
                    var rng = p.runtime.random("ops")
                    func path() -> String {
                        let roll = rng.unit()
                        let depth = roll < 0.4 ? 1 : (roll < 0.8 ? 2 : 3)
                        return "/" + (0..<depth).map { _ in names[Int.random(in: 0..<names.count, using: &rng)] }.joined(separator: "/")
                    }
                    for i in 0..<60 {
                        let server = servers[(c + i) % 2]
                        let op: Op
                        switch Int.random(in: 0..<10, using: &rng) {
                        case 0...2: op = .create(path())
                        case 3...5: op = .mkdir(path())
                        case 6...7: op = .rename(path(), path())
                        default: op = .remove(path(), recursive: rng.chance(0.5))
                        }
                        do {
                            switch op {
                            case .create(let q): _ = try await server.create(q)
                            case .mkdir(let q): _ = try await server.mkdir(q)
                            case .remove(let q, let r): try await server.remove(q, recursive: r)
                            case .rename(let a, let b): try await server.rename(a, b)
                            }
                            // In the simulator a transaction returns right after it
                            // commits, so this order is the commit order.
                            run.committed.append(op)
                        } catch is MetaError {
                            run.rejected += 1
                        } catch {
                            run.storeErrors.append("\(op): \(error)")
                        }
                    }
                    finished += 1
                    if finished == 4 {
                        _ = try? await servers[0].read { ns in
                            run.real = [:]
                            run.problems = []
                            try await inspect(ns, into: run)
                        }
                        run.done = true
                    }
                }
            }
            world.run(untilNanoseconds: 3_600_000_000_000)
            return run
        }
        #expect(run.done)
        #expect(run.storeErrors.isEmpty, "\(run.storeErrors.prefix(3))")
        var model = NamespaceModel()
        for (i, op) in run.committed.enumerated() {
            let applied = model.apply(op)
            #expect(applied, "seed \(seed): committed op #\(i) (\(op)) is impossible in the sequential model")
        }
        #expect(run.real == model.entries, "seed \(seed): final tree differs from the model")
        #expect(run.problems.isEmpty, "seed \(seed): \(run.problems.prefix(5))")
        #expect(run.inodeCount == run.real.count, "seed \(seed): \(run.inodeCount) inodes but \(run.real.count) reachable names (no hard links here)")
        #expect(run.committed.count > 30 && run.rejected > 10, "seed \(seed): the workload did too little (\(run.committed.count) committed, \(run.rejected) rejected)")
    }
}
