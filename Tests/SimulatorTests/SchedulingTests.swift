import CisternCore
import CisternSim
import Synchronization
import Testing

/// Seed-drawn scheduling of the simulator's ready queue.
@Suite struct SchedulingTests {
    /// The order in which 40 tasks, all ready at the same moment, each with three
    /// steps separated by yields, run their steps.
    func order(seed: UInt64, scheduling: SimExecutor.Scheduling?) -> (steps: [Int], reordered: UInt64) {
        SimWorld.simulate(seed: seed) { world -> ([Int], UInt64) in
            if let scheduling {
                world.executor.setScheduling(scheduling, random: DeterministicRandom(seed: seed).fork("picks"))
            }
            let log = Mutex<[Int]>([])
            for task in 0..<40 {
                world.spawn {
                    for step in 0..<3 {
                        log.withLock { $0.append(task * 10 + step) }
                        await Task.yield()
                    }
                }
            }
            _ = world.run(untilNanoseconds: 1_000_000_000)
            return (log.withLock { $0 }, world.executor.jobsReordered)
        }
    }

    @Test func fifoRunsJobsInTheOrderTheyBecameReady() {
        let (steps, reordered) = order(seed: 1, scheduling: nil)
        let expected = (0..<3).flatMap { step in (0..<40).map { $0 * 10 + step } }
        #expect(steps == expected)
        #expect(reordered == 0)
    }

    @Test func shuffledSchedulingReordersReadyJobsAndReplaysExactly() {
        let shuffled = SimExecutor.Scheduling(reorderProbability: 0.5, windowJobs: 8)
        let a = order(seed: 7, scheduling: shuffled)
        #expect(a.reordered > 0)
        #expect(a.steps.count == 120, "every step of every task ran")
        #expect(Set(a.steps).count == 120)
        let fifo = order(seed: 7, scheduling: nil).steps
        #expect(a.steps != fifo, "picks other than the oldest ready job change the order")
        // Each task's own steps stay in program order.
        for task in 0..<40 {
            let mine = a.steps.filter { $0 / 10 == task }
            #expect(mine == [task * 10, task * 10 + 1, task * 10 + 2])
        }
        #expect(order(seed: 7, scheduling: shuffled).steps == a.steps, "the same seed gives the same order")
        #expect(order(seed: 8, scheduling: shuffled).steps != a.steps, "another seed gives another order")
    }

    @Test func drawnSchedulingsStayInTheirRanges() {
        var random = DeterministicRandom(seed: 99)
        for _ in 0..<200 {
            let s = SimExecutor.Scheduling.drawn(&random)
            #expect((0.05...0.5).contains(s.reorderProbability) && (2...16).contains(s.windowJobs) && !s.isFIFO)
        }
        #expect(SimExecutor.Scheduling.fifo.isFIFO)
        #expect(SimExecutor.Scheduling(reorderProbability: 3, windowJobs: 0) == SimExecutor.Scheduling(reorderProbability: 1, windowJobs: 1))
    }
}
