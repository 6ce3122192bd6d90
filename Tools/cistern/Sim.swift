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

    func validate() throws {
        if seed != nil && seeds != nil { throw ValidationError("give --seed or --seeds, not both") }
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
        var failures: [RunResult] = []
        var runs = 0
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for (file, scenario) in scenarios {
            for s in seedList {
                let result = ScenarioRunner.run(scenario, path: file, seed: s, verbose: verbose)
                runs += 1
                if !result.passed { failures.append(result) }
                if json {
                    let line = String(decoding: try encoder.encode(result), as: UTF8.self)
                    print(line)
                } else {
                    let status = result.passed ? "ok  " : "FAIL"
                    print("\(status) \(scenario.name) seed=\(s) digest=\(result.digest) sim=\(String(format: "%.1f", result.simulatedSeconds))s wall=\(String(format: "%.2f", result.wallSeconds))s ops=\(result.operationsSucceeded)/\(result.operations) faults=\(result.faults) msgs=\(result.messages)\(result.metrics.keys.sorted().map { " \($0)=\(String(format: "%.3g", result.metrics[$0]!))" }.joined())")
                    if !result.passed {
                        if result.expectedViolations {
                            print("     expected a violation, none was detected")
                        }
                        for v in result.violations.prefix(10) { print("     violation: \(v)") }
                        print("     replay: \(result.replay)")
                    }
                }
            }
        }
        if !json {
            print("\(runs) run(s), \(runs - failures.count) passed, \(failures.count) failed")
            for f in failures { print("replay: \(f.replay)") }
        }
        if !failures.isEmpty { throw ExitCode(1) }
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
