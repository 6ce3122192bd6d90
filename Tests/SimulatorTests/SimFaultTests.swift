import CisternCore
import CisternSim
import Foundation
import Testing

@Suite struct SimFaultTests {
    @Test func tripwireFiresWhenWorkEscapesTheSimulatorThread() {
        let stop = SimWorld.simulate(seed: 1, tripwire: .report) { world -> SimExecutor.Stop in
            let done = DispatchSemaphore(value: 0)
            world.spawn {
                await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
                    // A detached task resumes the simulated task from another thread.
                    Task.detached {
                        c.resume()
                        done.signal()
                    }
                }
            }
            world.executor.schedule(at: 1_000_000) { done.wait() }
            return world.run(untilNanoseconds: 10_000_000_000)
        }
        guard case .tripwire(let reason) = stop else {
            Issue.record("expected the tripwire, got \(stop)")
            return
        }
        #expect(reason.contains("thread"))
    }

    @Test func timersFromAnotherThreadTrip() {
        let tripped = SimWorld.simulate(seed: 1, tripwire: .report) { world -> String? in
            let t = Thread { world.executor.schedule(after: 5) {} }
            t.start()
            while !t.isFinished { usleep(1000) }
            return world.executor.tripped
        }
        #expect(tripped != nil)
    }

    @Test func aSkewedClockRunsAheadAndDriftsButNeverGoesBack() {
        var clock = SimClock()
        #expect(clock.local(5_000_000_000) == 5_000_000_000)
        clock.adjust(at: 1_000_000_000, jumpNanoseconds: 300_000_000, driftPPM: 10_000)
        #expect(clock.local(1_000_000_000) == 1_300_000_000)
        #expect(clock.local(2_000_000_000) == 2_310_000_000, "1% fast: 1.01 s per second")
        #expect(clock.realDelay(forLocal: 1_010_000_000) == 1_000_000_000)
        var last = clock.local(2_000_000_000)
        clock.adjust(at: 2_000_000_000, jumpNanoseconds: 0, driftPPM: -50_000)
        #expect(clock.local(2_000_000_000) == last, "changing the rate does not jump")
        for t in stride(from: UInt64(2_000_000_000), to: 10_000_000_000, by: 7_777_777) {
            #expect(clock.local(t) >= last)
            last = clock.local(t)
        }
        clock.adjust(at: 3_000_000_000, jumpNanoseconds: 0, driftPPM: -1_000_000)
        #expect(clock.driftPPM == -100_000, "drift is limited to 10%")
    }

    @Test func processesReadAndSleepByTheirNodesClock() {
        let (read, slept) = SimWorld.simulate(seed: 3) { world -> (UInt64, UInt64) in
            let n = world.addNode(name: "n", host: "10.0.0.1")
            let p = world.start(n)
            world.skewClock(n, jumpNanoseconds: 500_000_000, driftPPM: 100_000)
            let seen = TimesSeen()
            let runtime = p.runtime!
            runtime.spawn("t") {
                seen.read = runtime.nowNanoseconds()
                try? await runtime.sleep(nanoseconds: 1_100_000_000)
                seen.slept = world.nowNanoseconds
            }
            _ = world.run(untilNanoseconds: 10_000_000_000)
            return (seen.read, seen.slept)
        }
        #expect(read == 500_000_000)
        #expect(slept == 1_000_000_000, "1.1 s on a clock 10% fast is 1 s of virtual time")
    }

    @Test func virtualTimeJumpsAndTimersFireInOrder() {
        let order = SimWorld.simulate(seed: 1) { world -> [Int] in
            var order: [Int] = []
            world.executor.schedule(at: 3_000_000_000) { order.append(3) }
            world.executor.schedule(at: 1_000_000_000) { order.append(1) }
            world.executor.schedule(at: 1_000_000_000) { order.append(2) }
            let stop = world.run(untilNanoseconds: 60_000_000_000)
            #expect(stop == .quiescent)
            #expect(world.nowNanoseconds == 3_000_000_000)
            return order
        }
        #expect(order == [1, 2, 3])
    }

    @Test func syncedDataSurvivesACrashAndUnsyncedMayNot() {
        // Over many seeds: fsynced bytes always survive; unsynced bytes sometimes vanish.
        var lostSome = false
        for seed in UInt64(1)...30 {
            let (synced, unsynced) = SimWorld.simulate(seed: seed) { world -> ([UInt8], [UInt8]) in
                let n = world.addNode(name: "n", host: "10.0.0.1")
                let p = world.start(n)
                var result: ([UInt8], [UInt8]) = ([], [])
                world.spawn {
                    let f = try! await p.disk.open("a", create: true)
                    try! await p.disk.write(f, offset: 0, [UInt8](repeating: 1, count: 4096))
                    try! await p.disk.fsync(f)
                    try! await p.disk.write(f, offset: 4096, [UInt8](repeating: 2, count: 4096))
                    world.kill(n, loseUnsyncedWrites: true)
                    let q = world.start(n)
                    world.spawn {
                        let g = try! await q.disk.open("a", create: false)
                        let bytes = try! await q.disk.read(g, offset: 0, length: 8192)
                        result = (Array(bytes.prefix(4096)), Array(bytes.dropFirst(4096)))
                    }
                }
                world.run(untilNanoseconds: 10_000_000_000)
                return result
            }
            #expect(synced == [UInt8](repeating: 1, count: 4096))
            if unsynced.count < 4096 || unsynced.contains(0) { lostSome = true }
        }
        #expect(lostSome)
    }

    @Test func fullDiskRefusesWritesWithNoSpace() {
        var disk = DiskConfig()
        disk.capacityBytes = 10_000
        let error = SimWorld.simulate(seed: 1, disk: disk) { world -> DiskError? in
            let n = world.addNode(name: "n", host: "10.0.0.1")
            let p = world.start(n)
            var failure: DiskError?
            world.spawn {
                let f = try! await p.disk.open("a", create: true)
                try! await p.disk.write(f, offset: 0, [UInt8](repeating: 1, count: 8_000))
                do { try await p.disk.write(f, offset: 8_000, [UInt8](repeating: 1, count: 4_000)) } catch { failure = error as? DiskError }
            }
            world.run(untilNanoseconds: 10_000_000_000)
            return failure
        }
        guard case .noSpace(_, let needed, let free) = error else {
            Issue.record("expected noSpace, got \(String(describing: error))")
            return
        }
        #expect(needed == 4_000)
        #expect(free == 2_000)
    }

    @Test func bitFlipChangesExactlyOneBit() {
        let (before, after) = SimWorld.simulate(seed: 4) { world -> ([UInt8], [UInt8]) in
            let n = world.addNode(name: "n", host: "10.0.0.1")
            let p = world.start(n)
            var out: ([UInt8], [UInt8]) = ([], [])
            world.spawn {
                let f = try! await p.disk.open("chunk", create: true)
                try! await p.disk.write(f, offset: 0, [UInt8](repeating: 0xAA, count: 256))
                let before = try! await p.disk.read(f, offset: 0, length: 256)
                n.diskStore.flipBit(in: "chunk")
                out = (before, try! await p.disk.read(f, offset: 0, length: 256))
            }
            world.run(untilNanoseconds: 10_000_000_000)
            return out
        }
        let differingBits = zip(before, after).map { ($0 ^ $1).nonzeroBitCount }.reduce(0, +)
        #expect(differingBits == 1)
    }

    @Test func killedProcessNeverResumesAndDropsItsTimers() {
        let (ticksBefore, ticksAfter) = SimWorld.simulate(seed: 1) { world -> (Int, Int) in
            let n = world.addNode(name: "n", host: "10.0.0.1")
            let ticks = Counter()
            n.boot = { ctx in
                while true {
                    try? await ctx.runtime.sleep(nanoseconds: 1_000_000)
                    ticks.value += 1
                }
            }
            world.start(n)
            world.run(untilNanoseconds: 100_000_000)
            let before = ticks.value
            world.kill(n)
            world.run(untilNanoseconds: 200_000_000)
            return (before, ticks.value)
        }
        #expect(ticksBefore >= 99)
        #expect(ticksAfter == ticksBefore)
    }

    @Test func pausedProcessCatchesUpOnResume() {
        let ticks = SimWorld.simulate(seed: 1) { world -> [Int] in
            let n = world.addNode(name: "n", host: "10.0.0.1")
            let ticks = Counter()
            n.boot = { ctx in
                while true {
                    try? await ctx.runtime.sleep(nanoseconds: 1_000_000)
                    ticks.value += 1
                }
            }
            world.start(n)
            world.run(untilNanoseconds: 10_000_000)
            var seen = [ticks.value]
            world.pause(n)
            world.run(untilNanoseconds: 50_000_000)
            seen.append(ticks.value)
            world.resume(n)
            world.run(untilNanoseconds: 60_000_000)
            seen.append(ticks.value)
            return seen
        }
        #expect(ticks[1] - ticks[0] <= 1)
        #expect(ticks[2] > ticks[1])
    }

    @Test func kvDetectsConflictsAndInjectsFaults() {
        var kv = KVConfig()
        kv.maybeCommittedProbability = 1
        let outcomes = SimWorld.simulate(seed: 1, kv: kv) { world -> [String] in
            let n = world.addNode(name: "n", host: "10.0.0.1")
            let p = world.start(n)
            var outcomes: [String] = []
            world.spawn {
                // maybe committed on every commit
                do { try await p.kv.attempt { tx in try await tx.set([1], [1]) } } catch { outcomes.append("\(error)") }
                world.kvStore.config.maybeCommittedProbability = 0
                // A read-then-write that another commit interleaves with conflicts.
                do {
                    try await p.kv.attempt { tx in
                        _ = try await tx.get([2])
                        try await p.kv.attempt { other in try await other.set([2], [9]) }
                        try await tx.set([2], [1])
                    }
                } catch { outcomes.append("\(error)") }
                world.kvStore.unavailableUntilNanoseconds = world.nowNanoseconds + 1_000_000_000
                do { _ = try await p.kv.attempt { tx in try await tx.get([1]) } } catch { outcomes.append("\(error)") }
            }
            world.run(untilNanoseconds: 10_000_000_000)
            return outcomes
        }
        #expect(outcomes.count == 3)
        #expect(outcomes.first == "\(KVError.maybeCommitted)")
        #expect(outcomes.dropFirst().first == "\(KVError.conflict)")
        #expect(outcomes.last?.contains("unavailable") == true)
    }

    @Test func duplicatedMessagesReachTheHandlerTwice() {
        var net = NetworkConfig()
        net.duplicateProbability = 1
        let handled = SimWorld.simulate(seed: 1, network: net) { world -> Int in
            let a = world.addNode(name: "a", host: "10.0.0.1")
            let b = world.addNode(name: "b", host: "10.0.0.2")
            let handled = Counter()
            b.boot = { ctx in
                await ctx.transport.serve(ServiceID(1)) { r in
                    handled.value += 1
                    return r.message
                }
            }
            world.start(b)
            let pa = world.start(a)
            world.spawn { _ = try? await pa.transport.call(b.id, service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: 1_000_000_000) }
            world.run(untilNanoseconds: 10_000_000_000)
            return handled.value
        }
        #expect(handled == 2)
    }
}

/// A counter shared with simulated tasks (all run on the one simulator thread).
final class Counter: @unchecked Sendable {
    var value = 0
}

final class TimesSeen: @unchecked Sendable {
    var read: UInt64 = 0
    var slept: UInt64 = 0
}
