import ArgumentParser
import CisternSim
import Foundation

/// `cistern bench`: benchmarks that print figures, never pass/fail.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run benchmarks.",
        subcommands: [SimBench.self])
}

struct SimBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Simulated small RPCs per wall-clock second on the one simulator thread.")

    @Option(help: "Number of calls.")
    var calls = 400_000

    @Option(help: "Calls in flight at once.")
    var concurrency = 64

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func run() throws {
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        let r = SimBenchmark.run(calls: calls, concurrency: concurrency)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var object = try JSONSerialization.jsonObject(with: encoder.encode(r)) as! [String: Any]
            object["build"] = build
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("simulated RPCs: \(r.calls) calls, \(r.concurrency) in flight, \(String(format: "%.2f", r.wallSeconds)) s wall, \(String(format: "%.3f", r.simulatedSeconds)) s simulated")
            print("rpcs_per_second: \(Int(r.rpcsPerSecond)) (\(build) build, one thread)")
            if build == "debug" { print("note: a debug build is several times slower; measure with `swift build -c release`") }
        }
    }
}
