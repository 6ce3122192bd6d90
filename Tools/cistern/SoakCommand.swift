import ArgumentParser
import CisternKV
import CisternServer
import Foundation

struct Soak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local cluster under mixed KV and file load while killing and restarting random processes; check every acknowledged page and file, and that resources level off.",
        discussion: """
            Starts its own cluster in --data-dir (removed first) and stops it at the end, also on failure. Prints a line per sample, \
            then the report: what was written and checked, each fault, and per process resident memory, open files, disk use and \
            the chunk metadata log size over time with a verdict. Exit status 1 on any wrong, lost or unreadable data, a process \
            that did not restart, chains that did not settle, or a resource still growing (runs of 10 minutes or more; shorter \
            runs are too short to judge). The same --seed gives the same fault schedule.
            """)

    @Option(help: "How long the load runs, in minutes") var minutes: Double = 30
    @Option(help: "Where the cluster lives (removed first)") var dataDir = NSTemporaryDirectory() + "cistern-soak"
    @Option(help: "Seed of the fault schedule") var seed: UInt64 = 1
    @Option(help: "Storage nodes (chains of 3 replicas)") var storageNodes = 4
    @Option(help: "Metadata servers") var metaServers = 2
    @Option(help: "Seconds between faults") var faultEverySeconds: Double = 30
    @Option(help: "Seconds between resource samples (default: the run's length / 40, at least 5)") var sampleEverySeconds: Double?
    @Option(help: "KV durability: cache or durable") var durability = "cache"

    func run() async throws {
        guard minutes > 0, minutes <= 24 * 60 else { throw fail("--minutes \(minutes) is outside (0, 1440]") }
        guard (3...16).contains(storageNodes) else { throw fail("--storage-nodes \(storageNodes) is outside 3...16 (chains have 3 replicas)") }
        guard (1...9).contains(metaServers) else { throw fail("--meta-servers \(metaServers) is outside 1...9") }
        guard faultEverySeconds >= 5 else { throw fail("--fault-every-seconds \(faultEverySeconds) is below 5 (a process needs time to restart)") }
        guard let d = KVDurability(durability) else { throw fail("--durability \(durability) is not cache or durable") }
        var o = CisternServer.Soak.Options(dataDir: dataDir, binary: selfExecutable())
        o.durationSeconds = minutes * 60
        o.seed = seed
        o.storageNodes = storageNodes
        o.metaServers = metaServers
        o.faultEverySeconds = faultEverySeconds
        o.sampleEverySeconds = sampleEverySeconds ?? max(5, o.durationSeconds / 40)
        o.durability = d
        let report: CisternServer.Soak.Report
        do {
            report = try await CisternServer.Soak.run(o) { print("soak: \($0)") }
        } catch {
            throw fail("\(error)")
        }
        print(CisternServer.Soak.format(report), terminator: "")
        if !report.ok { throw ExitCode(1) }
    }
}
