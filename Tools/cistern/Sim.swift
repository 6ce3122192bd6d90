import ArgumentParser
import CisternScenario
import Foundation

/// `cistern sim`: runs scenario files in the deterministic simulator.
struct Sim: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run fault-injection scenarios in the deterministic simulator.",
        discussion: """
            Runs each scenario file (or every .yaml in a folder) once per seed and checks \
            its invariants. The same scenario, seed and build always give the same digest. \
            A failing run prints the command that replays it. Exits 1 if any run failed.
            """)

    @Argument(help: "A scenario file, or a folder of them.")
    var path: String

    @Option(help: "Run one seed.")
    var seed: UInt64?

    @Option(help: "Run a range of seeds, written A...B (inclusive).")
    var seeds: String?

    @Flag(help: "Print one JSON object per run, one per line.")
    var json = false

    @Flag(help: "Print the simulated nodes' logs to standard error.")
    var verbose = false

    @Option(help: "Runs at once, each in its own process (default: the machine's cores; 1 runs in this process).")
    var jobs: Int?

    @Option(help: "After the runs, repeat this many of them (spread over the list) in fresh processes and require identical digests.")
    var determinismSample = 0

    @Option(help: ArgumentHelp("Write a self-contained HTML report of the run (one scenario file, one seed): a timeline of faults, node and chain states, client throughput and latency.", valueName: "FILE.html"))
    var report: String?

    @Flag(help: "For a failing seed (one scenario file, one seed): drop faults while it still fails the same way, and print the smallest failing scenario file.")
    var shrink = false

    @Option(help: ArgumentHelp("With --shrink: also write the shrunk scenario to this file.", valueName: "FILE.yaml"))
    var shrinkOutput: String?

    @Option(help: ArgumentHelp("How jobs ready at the same moment are picked: fifo, or shuffled (seed-drawn; the scenario's own setting by default).", valueName: "fifo|shuffled"))
    var scheduling: String?

    @Option(help: ArgumentHelp("Whether fault points in component code may fire (the scenario's own setting by default).", valueName: "on|off"))
    var faultPoints: String?

    var faultPointsFlag: Bool? { faultPoints.map { $0 == "on" } }

    @Option(help: ArgumentHelp("Whether settings (timeouts, intervals, batch sizes, limits, retry bounds) are drawn from the seed (the scenario's own setting by default).", valueName: "on|off"))
    var knobs: String?

    var knobsFlag: Bool? { knobs.map { $0 == "on" } }

    /// The overrides as arguments (for child processes and replay commands).
    var overrideArguments: [String] {
        (scheduling.map { ["--scheduling", $0] } ?? []) + (faultPoints.map { ["--fault-points", $0] } ?? []) + (knobs.map { ["--knobs", $0] } ?? [])
    }

    func validate() throws {
        if seed != nil && seeds != nil { throw ValidationError("give --seed or --seeds, not both") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if (report != nil || shrink) && seeds != nil { throw ValidationError("--report and --shrink take one run: give --seed N, not --seeds") }
        if shrinkOutput != nil && !shrink { throw ValidationError("--shrink-output needs --shrink") }
        if let faultPoints, faultPoints != "on" && faultPoints != "off" {
            throw ValidationError("--fault-points '\(faultPoints)' is unknown; give on or off")
        }
        if let knobs, knobs != "on" && knobs != "off" {
            throw ValidationError("--knobs '\(knobs)' is unknown; give on or off")
        }
        if let scheduling, !Scenario.schedulingModes.contains(scheduling) {
            throw ValidationError("--scheduling '\(scheduling)' is unknown; give \(Scenario.schedulingModes.joined(separator: " or "))")
        }
        if let seeds, SeedRange(seeds) == nil {
            throw ValidationError("--seeds '\(seeds)' is not a range; write it as A...B, for example 1...20")
        }
    }

    func run() throws {
        let seedList: [UInt64]
        if let seeds, let range = SeedRange(seeds) {
            seedList = Array(range.range)
        } else {
            seedList = [seed ?? 1]
        }
        let files: [String]
        var scenarios: [(String, Scenario)] = []
        do {
            files = try ScenarioLoader.files(at: path)
            for f in files { scenarios.append((f, try ScenarioLoader.load(path: f))) }
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if scenarios.isEmpty {
            FileHandle.standardError.write(Data("error: no .yaml scenario files in \(path)\n".utf8))
            throw ExitCode(2)
        }
        if (report != nil || shrink) && scenarios.count != 1 {
            FileHandle.standardError.write(Data("error: --report and --shrink take one scenario file; \(path) has \(scenarios.count)\n".utf8))
            throw ExitCode(2)
        }
        if scheduling != nil || faultPoints != nil || knobs != nil {
            scenarios = scenarios.map { (file, scenario) in
                var s = scenario
                if let scheduling { s.scheduling = scheduling }
                if let flag = faultPointsFlag { s.faultPoints = flag }
                if let flag = knobsFlag { s.knobs = flag }
                return (file, s)
            }
        }
        if shrink { return try runShrink(file: scenarios[0].0, scenario: scenarios[0].1, seed: seedList[0]) }
        if let report {
            let (file, scenario) = scenarios[0]
            let result = ScenarioRunner.run(scenario, path: file, seed: seedList[0], verbose: verbose, record: true, scheduling: scheduling, faultPoints: faultPointsFlag, knobs: knobsFlag)
            try self.report(result, encoder: JSONEncoder())
            let text = try? String(contentsOfFile: file, encoding: .utf8)
            do {
                try RunReport.html(result, result.recording ?? RunRecording(), scenarioText: text).write(toFile: report, atomically: true, encoding: .utf8)
            } catch {
                FileHandle.standardError.write(Data("error: cannot write the report to \(report): \(error.localizedDescription); check the folder exists and is writable\n".utf8))
                throw ExitCode(2)
            }
            if !json { print("report: \(report)") }
            if !result.passed { throw ExitCode(1) }
            return
        }
        let work = scenarios.flatMap { (file, scenario) in seedList.map { (file: file, scenario: scenario, seed: $0) } }
        let workers = verbose ? 1 : min(jobs ?? ProcessInfo.processInfo.activeProcessorCount, work.count)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var results: [RunResult] = []
        if workers <= 1 {
            for w in work {
                let result = ScenarioRunner.run(w.scenario, path: w.file, seed: w.seed, verbose: verbose, scheduling: scheduling, faultPoints: faultPointsFlag, knobs: knobsFlag)
                results.append(result)
                try report(result, encoder: encoder)
            }
        } else {
            results = try SimPool.run(work.map { ($0.file, $0.seed) }, workers: workers, progress: !json, overrides: overrideArguments)
            for r in results { try report(r, encoder: encoder) }
        }
        let failures = results.filter { !$0.passed }
        var nondeterministic: [String] = []
        if determinismSample > 0 && !results.isEmpty {
            let n = min(determinismSample, results.count)
            let picks = (0..<n).map { results[$0 * results.count / n] }
            let again = try SimPool.run(picks.map { r in (work.first { $0.scenario.name == r.scenario && $0.seed == r.seed }!.file, r.seed) }, workers: max(workers, 1), progress: false, overrides: overrideArguments)
            for (a, b) in zip(picks, again) where a.digest != b.digest {
                nondeterministic.append("\(a.scenario) seed \(a.seed): \(a.digest) then \(b.digest); replay: \(a.replay)")
            }
            if !json {
                print(nondeterministic.isEmpty ? "determinism: \(n) run(s) repeated in fresh processes gave identical digests" : "NONDETERMINISTIC:\n" + nondeterministic.joined(separator: "\n"))
            }
        }
        if !json {
            if results.count > 1 { print(SimSummary.table(results)) }
            print("\(results.count) run(s), \(results.count - failures.count) passed, \(failures.count) failed")
            for f in failures { print("replay: \(f.replay)   (shrink: \(f.replay) --shrink)") }
        }
        if !failures.isEmpty || !nondeterministic.isEmpty { throw ExitCode(1) }
    }

    func runShrink(file: String, scenario: Scenario, seed: UInt64) throws {
        let outcome: Shrinker.Outcome
        do {
            outcome = try Shrinker.shrink(scenario, path: file, seed: seed) { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let text = try Shrinker.file(outcome, from: file, seed: seed)
        FileHandle.standardError.write(Data("shrunk \(outcome.originalFaults) faults to \(outcome.keptFaults) in \(outcome.runs) runs; the smallest failing scenario:\n".utf8))
        print(text, terminator: "")
        if let shrinkOutput {
            do {
                try text.write(toFile: shrinkOutput, atomically: true, encoding: .utf8)
            } catch {
                FileHandle.standardError.write(Data("error: cannot write \(shrinkOutput): \(error.localizedDescription)\n".utf8))
                throw ExitCode(2)
            }
            FileHandle.standardError.write(Data("written to \(shrinkOutput); replay: cistern sim \(shrinkOutput) --seed \(seed)\n".utf8))
        }
    }

    func report(_ result: RunResult, encoder: JSONEncoder) throws {
        if json {
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            return
        }
        let status = result.passed ? "ok  " : "FAIL"
        print("\(status) \(result.scenario) seed=\(result.seed) digest=\(result.digest) sim=\(String(format: "%.1f", result.simulatedSeconds))s wall=\(String(format: "%.2f", result.wallSeconds))s ops=\(result.operationsSucceeded)/\(result.operations) faults=\(result.faults) msgs=\(result.messages)\(result.metrics.keys.sorted().map { " \($0)=\(String(format: "%.3g", result.metrics[$0]!))" }.joined())")
        if !result.passed {
            if let mix = result.faultMix { print("     swarm: \(mix)") }
            if let s = result.scheduling { print("     scheduling: \(s)") }
            if let f = result.faultPointsFired { print("     fault points fired: \(f.isEmpty ? "none" : f)") }
            if let k = result.knobs { print("     knobs: \(k)") }
            if result.expectedViolations { print("     expected a violation, none was detected") }
            for v in result.violations.prefix(10) { print("     violation: \(v)") }
            print("     replay: \(result.replay)")
        }
    }
}

/// Runs (file, seed) pairs as `cistern sim FILE --seed S --json` child processes, at
/// most `workers` at once, with a progress line on standard error; returns the
/// results in the order given.
enum SimPool {
    static func run(_ work: [(String, UInt64)], workers: Int, progress: Bool, overrides: [String] = []) throws -> [RunResult] {
        let binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var results = [RunResult?](repeating: nil, count: work.count)
        var running: [(index: Int, process: Process, output: Pipe, data: DataBox)] = []
        var next = 0, done = 0, failed = 0
        let start = Date()
        let decoder = JSONDecoder()
        func launch(_ i: Int) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["sim", work[i].0, "--seed", "\(work[i].1)", "--json", "--jobs", "1"] + overrides
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            let box = DataBox()
            out.fileHandleForReading.readabilityHandler = { h in box.append(h.availableData) }
            try p.run()
            running.append((i, p, out, box))
        }
        while done < work.count {
            while running.count < workers && next < work.count {
                try launch(next)
                next += 1
            }
            usleep(5_000)
            for (k, r) in running.enumerated().reversed() where !r.process.isRunning {
                r.output.fileHandleForReading.readabilityHandler = nil
                r.data.append(r.output.fileHandleForReading.readDataToEndOfFile())
                let line = r.data.value.split(separator: UInt8(ascii: "\n")).last.map { Data($0) } ?? Data()
                if let result = try? decoder.decode(RunResult.self, from: line) {
                    results[r.index] = result
                    if !result.passed { failed += 1 }
                } else {
                    var broken = RunResult(scenario: (work[r.index].0 as NSString).lastPathComponent, seed: work[r.index].1)
                    broken.violations = ["the run's process exited with status \(r.process.terminationStatus) without a result (crash or tripwire); replay it alone"]
                    broken.replay = (["cistern", "sim", work[r.index].0, "--seed", "\(work[r.index].1)"] + overrides).joined(separator: " ")
                    results[r.index] = broken
                    failed += 1
                }
                running.remove(at: k)
                done += 1
                if progress {
                    let t = Date().timeIntervalSince(start)
                    let eta = done > 0 ? t / Double(done) * Double(work.count - done) : 0
                    FileHandle.standardError.write(Data(String(format: "\r[%d/%d] %d failed, %.0fs elapsed, ~%.0fs left   ", done, work.count, failed, t, eta).utf8))
                }
            }
        }
        if progress { FileHandle.standardError.write(Data("\n".utf8)) }
        return results.map { $0! }
    }
}

final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func append(_ d: Data) { lock.withLock { data.append(d) } }
    var value: Data { lock.withLock { data } }
}

/// The summary table: per scenario, seeds run, failures, events per wall second and
/// simulated seconds per wall second.
enum SimSummary {
    static func table(_ results: [RunResult]) -> String {
        var order: [String] = []
        var groups: [String: [RunResult]] = [:]
        for r in results {
            if groups[r.scenario] == nil { order.append(r.scenario) }
            groups[r.scenario, default: []].append(r)
        }
        var out = "scenario                             seeds  failed   events/s   sim-s/wall-s\n"
        for name in order {
            let rs = groups[name]!
            let wall = max(rs.reduce(0) { $0 + $1.wallSeconds }, 1e-9)
            let events = Double(rs.reduce(UInt64(0)) { $0 + $1.events })
            let sim = rs.reduce(0) { $0 + $1.simulatedSeconds }
            out += name.padding(toLength: 36, withPad: " ", startingAt: 0)
                + String(format: " %5d  %6d  %9.0f  %13.1f\n", rs.count, rs.filter { !$0.passed }.count, events / wall, sim / wall)
        }
        return out
    }
}

/// "A...B" seed ranges.
struct SeedRange {
    let range: ClosedRange<UInt64>
    init?(_ text: String) {
        let parts = text.components(separatedBy: "...")
        guard parts.count == 2, let a = UInt64(parts[0]), let b = UInt64(parts[1]), a <= b, b - a < 1_000_000 else { return nil }
        range = a...b
    }
}
