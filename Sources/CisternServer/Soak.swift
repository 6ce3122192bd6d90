import Cistern
import CisternCore
import CisternMeta
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `cistern soak` / `make soak`: a local cluster of real processes under mixed KV and
/// file load for a set time while random storage, metadata and manager processes are
/// killed with SIGKILL and restarted. During the run readers check every page and file
/// they read; at the end every acknowledged page and file must read back exactly. It
/// samples each process's resident memory, open files, disk use and (storage) chunk
/// metadata log size, and judges whether each levelled off. A process shell: wall
/// time and tasks of its own are allowed here.
public enum Soak {
    public struct Options: Sendable {
        public var dataDir: String
        public var binary: String
        public var durationSeconds: Double = 1800
        public var storageNodes = 4
        public var targetsPerNode = 2
        public var metaServers = 2
        public var faultEverySeconds: Double = 30
        public var downSeconds: ClosedRange<Double> = 3...10
        public var sampleEverySeconds: Double = 30
        public var seed: UInt64 = 1
        public var pageBytes = 64 << 10
        /// Pages kept stored at once; older ones are deleted (so disk use can level off).
        public var livePages = 1024
        /// Files kept at once; older ones are removed (their chunks collected).
        public var liveFiles = 24
        public var fileBytesMax = 1 << 20
        public var durability: KVDurability = .cache

        public init(dataDir: String, binary: String) {
            self.dataDir = dataDir
            self.binary = binary
        }
    }

    public struct Sample: Sendable {
        public var seconds: Double
        public var node: String
        public var residentBytes: Double
        public var openFiles: Double
        public var diskBytes: Double
        public var metaLogBytes: Double
    }

    public struct Report: Sendable {
        public var options: Options
        public var faults: [SoakFault] = []
        public var restartFailures: [String] = []
        public var pagesStored = 0
        public var pagesDeleted = 0
        public var filesWritten = 0
        public var filesRemoved = 0
        public var readsChecked = 0
        public var readsFailed = 0
        public var writesFailed = 0
        public var wrong: [String] = []
        public var lost: [String] = []
        public var finalPagesChecked = 0
        public var finalFilesChecked = 0
        public var unreadableAtEnd: [String] = []
        public var samples: [Sample] = []
        public var trends: [(node: String, metric: String, trend: SoakTrend)] = []
        public var notSettled: String?
        /// The KV namespace's slots at the end (headroom shows no page was evicted).
        public var namespaceUsage: String?

        public var dataIntact: Bool { wrong.isEmpty && lost.isEmpty && unreadableAtEnd.isEmpty }
        public var levelled: Bool { !trends.contains { if case .growing = $0.trend { return true } else { return false } } }
        public var ok: Bool { dataIntact && levelled && restartFailures.isEmpty && notSettled == nil }
    }

    /// The bytes of a page or file: a function of its name, so any read can be checked.
    static func content(_ name: String, _ n: Int) -> [UInt8] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= n {
                h = h &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                raw.storeBytes(of: h.littleEndian, toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < n { raw[i] = UInt8(truncatingIfNeeded: h >> UInt64((i % 8) * 8)); i += 1 }
        }
        return out
    }

    /// What the load has acknowledged. A key or file is `live` once acknowledged, and
    /// leaves the ledger when its delete is acknowledged; one whose put or delete failed
    /// is `uncertain` (it may or may not exist: only its bytes are checked).
    final class Ledger: Sendable {
        struct State {
            var livePages: [String] = []
            var livePageSet: Set<String> = []
            var uncertainPages: Set<String> = []
            var liveFiles: [(path: String, bytes: Int)] = []
            var liveFileSet: Set<String> = []
            var uncertainFiles: Set<String> = []
            var report: Report
        }
        let state: Mutex<State>
        init(_ options: Options) { state = Mutex(State(report: Report(options: options))) }
        @discardableResult func with<T>(_ body: (inout State) -> T) -> T { state.withLock { body(&$0) } }
        func isLivePage(_ k: String) -> Bool { with { $0.livePageSet.contains(k) } }
        func isLiveFile(_ p: String) -> Bool { with { $0.liveFileSet.contains(p) } }
    }

    /// Runs the soak; the cluster is stopped at the end, also when it fails.
    public static func run(_ options: Options, progress: @escaping @Sendable (String) -> Void) async throws -> Report {
        let cluster = LocalCluster(dataDir: options.dataDir)
        try? FileManager.default.removeItem(atPath: options.dataDir)
        progress("starting a local cluster in \(cluster.dataDir): \(options.storageNodes) storage nodes, \(options.metaServers) metadata servers, 1 manager")
        try await cluster.up(storageNodes: options.storageNodes, targetsPerNode: options.targetsPerNode, metaServers: options.metaServers,
                             meta: ServerConfig.Meta(maintenanceIntervalSeconds: 5, gcDelaySeconds: 10), binary: options.binary)
        do {
            let report = try await drive(cluster, options, progress: progress)
            try await cluster.down()
            return report
        } catch {
            try? await cluster.down()
            throw error
        }
    }

    static func nodes(_ cluster: LocalCluster) -> [(name: String, role: String)] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: cluster.path("config"))) ?? []).filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
        return names.map { n in (n, n.hasPrefix("storage") ? "storage" : n.hasPrefix("meta") ? "meta" : "mgmtd") }
    }

    static func drive(_ cluster: LocalCluster, _ options: Options, progress: @escaping @Sendable (String) -> Void) async throws -> Report {
        let session = try await ClientSession.connect(cluster, name: "soak")
        let client = session.client
        let ledger = Ledger(options)
        let nodes = nodes(cluster)
        let plan = SoakPlan.faults(seed: options.seed, nodes: nodes, durationSeconds: options.durationSeconds, everySeconds: options.faultEverySeconds,
                                   downSeconds: options.downSeconds)
        ledger.with { $0.report.faults = plan }
        progress("fault schedule (seed \(options.seed)): \(plan.count) faults, one every \(Int(options.faultEverySeconds)) s")
        // Room for the live pages and for deleted ones whose slots wait for their read
        // leases to end: a full namespace evicts, and an evicted page would read as lost.
        let capacity = UInt64(max(options.livePages * 8, 4096))
        let ns = try await client.kvNamespace("soak", pageBytes: options.pageBytes, capacityPages: capacity, durability: options.durability)
        _ = try await client.mkdir("/soak")
        let start = Date()
        let end = start.addingTimeInterval(options.durationSeconds)

        let kvWriter = Task {
            var n = 0
            while Date() < end {
                let keys = (n..<n + 8).map { "p\($0)" }
                n += 8
                do {
                    let outcomes = try await ns.put(keys.map { ($0, content($0, options.pageBytes)) })
                    ledger.with { s in
                        for (k, o) in zip(keys, outcomes) {
                            if o.isStored { s.livePages.append(k); s.livePageSet.insert(k); s.report.pagesStored += 1 } else { s.uncertainPages.insert(k); s.report.writesFailed += 1 }
                        }
                    }
                } catch {
                    ledger.with { s in s.uncertainPages.formUnion(keys); s.report.writesFailed += keys.count }
                    try? await Task.sleep(nanoseconds: 200_000_000)
                }
                // Keep the stored set bounded: delete the oldest, and retry deletes of
                // pages whose fate is unknown.
                let old: [String] = ledger.with { s in
                    guard s.livePages.count > options.livePages else { return [] }
                    let batch = Array(s.livePages.prefix(64))
                    s.livePages.removeFirst(batch.count)
                    s.livePageSet.subtract(batch)
                    return batch
                }
                let doubtful = ledger.with { Array($0.uncertainPages.sorted().prefix(64)) }
                for batch in [old, doubtful] where !batch.isEmpty {
                    do {
                        _ = try await ns.delete(batch)
                        ledger.with { s in
                            s.uncertainPages.subtract(batch)
                            if batch == old { s.report.pagesDeleted += batch.count }
                        }
                    } catch {
                        ledger.with { $0.uncertainPages.formUnion(batch) }
                    }
                }
            }
        }

        let fileWriter = Task {
            var n = 0
            var rng = DeterministicRandom(seed: options.seed &+ 1)
            while Date() < end {
                let path = "/soak/f\(n)"
                let bytes = 4096 + Int(rng.next() % UInt64(max(1, options.fileBytesMax - 4096)))
                n += 1
                do {
                    try await client.writeFile(path, content(path, bytes))
                    ledger.with { s in s.liveFiles.append((path, bytes)); s.liveFileSet.insert(path); s.report.filesWritten += 1 }
                } catch {
                    ledger.with { s in s.uncertainFiles.insert(path); s.report.writesFailed += 1 }
                    try? await Task.sleep(nanoseconds: 200_000_000)
                }
                let old: String? = ledger.with { s in
                    guard s.liveFiles.count > options.liveFiles else { return nil }
                    let p = s.liveFiles.removeFirst().path
                    s.liveFileSet.remove(p)
                    return p
                }
                let doubtful = ledger.with { $0.uncertainFiles.sorted().first }
                for p in [old, doubtful].compactMap({ $0 }) {
                    do throws(CisternError) {
                        try await client.remove(p)
                        ledger.with { s in s.uncertainFiles.remove(p); if p == old { s.report.filesRemoved += 1 } }
                    } catch .meta(.refused(.notFound, _)) {
                        ledger.with { s in s.uncertainFiles.remove(p); if p == old { s.report.filesRemoved += 1 } }
                    } catch {
                        ledger.with { $0.uncertainFiles.insert(p) }
                    }
                }
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }

        let reader = Task {
            var rng = DeterministicRandom(seed: options.seed &+ 2)
            while Date() < end {
                let keys: [String] = ledger.with { s in
                    s.livePages.isEmpty ? [] : (0..<16).map { _ in s.livePages[Int(rng.next() % UInt64(s.livePages.count))] }
                }
                if !keys.isEmpty {
                    do {
                        let got = try await ns.get(keys)
                        for (k, g) in zip(keys, got) {
                            switch g {
                            case .found(let b):
                                ledger.with { s in
                                    s.report.readsChecked += 1
                                    if b != content(k, options.pageBytes) { s.report.wrong.append("page \(k)") }
                                }
                            case .missing:
                                // Lost only if it was acknowledged and not deleted before
                                // and after the read.
                                if ledger.isLivePage(k) { ledger.with { $0.report.lost.append("page \(k) (during the run)") } }
                            case .failed:
                                ledger.with { $0.report.readsFailed += 1 }
                            }
                        }
                    } catch {
                        ledger.with { $0.report.readsFailed += keys.count }
                    }
                }
                let file: (path: String, bytes: Int)? = ledger.with { s in
                    s.liveFiles.isEmpty ? nil : s.liveFiles[Int(rng.next() % UInt64(s.liveFiles.count))]
                }
                if let file {
                    do throws(CisternError) {
                        let b = try await client.readFile(file.path)
                        ledger.with { s in
                            s.report.readsChecked += 1
                            if b != content(file.path, file.bytes) { s.report.wrong.append("file \(file.path) (\(b.count) of \(file.bytes) bytes)") }
                        }
                    } catch .meta(.refused(.notFound, _)) {
                        if ledger.isLiveFile(file.path) { ledger.with { $0.report.lost.append("file \(file.path) (during the run)") } }
                    } catch {
                        ledger.with { $0.report.readsFailed += 1 }
                    }
                }
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }

        let chaos = Task {
            for f in plan {
                let at = start.addingTimeInterval(f.atSeconds)
                if at > Date() { try? await Task.sleep(nanoseconds: UInt64(at.timeIntervalSinceNow * 1e9)) }
                progress("fault: \(f)")
                cluster.kill9(f.node)
                try? await Task.sleep(nanoseconds: UInt64(f.downSeconds * 1e9))
                do {
                    try cluster.start(f.node, role: f.role, binary: options.binary)
                    try await cluster.waitForPID(f.node, timeoutSeconds: 60)
                } catch {
                    ledger.with { $0.report.restartFailures.append("\(f.node) at \(Int(f.atSeconds)) s: \(error)") }
                    progress("\(f.node) did not restart: \(error)")
                }
            }
        }

        let sampler = Task {
            while Date() < end {
                let t = Date().timeIntervalSince(start)
                let round = sample(cluster, nodes: nodes, atSeconds: t)
                ledger.with { $0.report.samples += round }
                let stored = ledger.with { ($0.report.pagesStored, $0.report.filesWritten, $0.report.readsChecked) }
                progress("t=\(Int(t)) s: \(stored.0) pages stored, \(stored.1) files written, \(stored.2) reads checked; "
                    + round.map { "\($0.node) \(mib($0.residentBytes)) MiB rss, \(Int($0.openFiles)) fds, \(mib($0.diskBytes)) MiB disk" + ($0.metaLogBytes > 0 ? ", \(mib($0.metaLogBytes)) MiB meta log" : "") }.joined(separator: "; "))
                try? await Task.sleep(nanoseconds: UInt64(options.sampleEverySeconds * 1e9))
            }
        }

        await kvWriter.value
        await fileWriter.value
        await reader.value
        await chaos.value
        sampler.cancel()
        await sampler.value
        let last = sample(cluster, nodes: nodes, atSeconds: Date().timeIntervalSince(start))
        ledger.with { $0.report.samples += last }

        // Everything back up, every chain serving, then every acknowledged page and file.
        for (name, role) in nodes where cluster.runningNodes()[name] == nil {
            try? cluster.start(name, role: role, binary: options.binary)
            try? await cluster.waitForPID(name, timeoutSeconds: 60)
        }
        progress("load stopped; waiting for every chain to serve on all replicas")
        let settleDeadline = Date().addingTimeInterval(180)
        var settled = false
        while Date() < settleDeadline {
            await client.mgmtd.refreshRouting()
            if let r = await client.mgmtd.routing, !r.chains.isEmpty, r.chains.allSatisfy({ $0.targets.allSatisfy { $0.state == .serving } }) {
                settled = true
                break
            }
            try? await Task.sleep(nanoseconds: 500_000_000)
        }
        if !settled { ledger.with { $0.report.notSettled = "not every chain was SERVING on all replicas 180 s after the load stopped" } }

        let (pages, files, doubtfulPages) = ledger.with { ($0.livePages, $0.liveFiles, $0.uncertainPages.sorted()) }
        progress("checking \(pages.count) acknowledged pages and \(files.count) files")
        for batch in batches(pages, of: 64) {
            var results: [KVGetResult] = []
            for attempt in 0..<10 {
                results = (try? await ns.get(batch)) ?? batch.map { _ in .failed("get threw") }
                if !results.contains(where: { if case .failed = $0 { return true } else { return false } }) { break }
                try? await Task.sleep(nanoseconds: UInt64(attempt + 1) * 500_000_000)
            }
            ledger.with { s in
                for (k, g) in zip(batch, results) {
                    switch g {
                    case .found(let b):
                        s.report.finalPagesChecked += 1
                        if b != content(k, options.pageBytes) { s.report.wrong.append("page \(k) (at the end)") }
                    case .missing: s.report.lost.append("page \(k) (at the end)")
                    case .failed(let why): s.report.unreadableAtEnd.append("page \(k): \(why)")
                    }
                }
            }
        }
        // Pages whose put or delete failed: absent or exact, never wrong.
        for batch in batches(doubtfulPages, of: 64) {
            guard let got = try? await ns.get(batch) else { continue }
            ledger.with { s in
                for (k, g) in zip(batch, got) { if case .found(let b) = g, b != content(k, options.pageBytes) { s.report.wrong.append("page \(k) (uncertain, wrong bytes)") } }
            }
        }
        for file in files {
            var outcome: Result<[UInt8], CisternError> = .failure(.invalidArgument("not read"))
            for attempt in 0..<10 {
                do throws(CisternError) {
                    outcome = .success(try await client.readFile(file.path))
                    break
                } catch .meta(.refused(.notFound, let why)) {
                    outcome = .failure(.meta(.refused(.notFound, why)))
                    break
                } catch {
                    outcome = .failure(error)
                    try? await Task.sleep(nanoseconds: UInt64(attempt + 1) * 500_000_000)
                }
            }
            ledger.with { s in
                switch outcome {
                case .success(let b):
                    s.report.finalFilesChecked += 1
                    if b != content(file.path, file.bytes) { s.report.wrong.append("file \(file.path) (at the end)") }
                case .failure(.meta(.refused(.notFound, _))): s.report.lost.append("file \(file.path) (at the end)")
                case .failure(let e): s.report.unreadableAtEnd.append("file \(file.path): \(e)")
                }
            }
        }
        let usage = try? await ns.usage()
        await session.close()

        var report = ledger.with { $0.report }
        report.namespaceUsage = usage.map { "\($0)" }
        report.trends = trends(report.samples, judge: options.durationSeconds >= judgedRunSecondsMin)
        return report
    }

    static func mib(_ bytes: Double) -> String { String(format: "%.1f", bytes / 1_048_576) }

    /// The metrics judged, each in the unit its name gives, with the floor (in that
    /// unit) below which growth never counts.
    static var metrics: [(name: String, value: KeyPath<Sample, Double>, unitBytes: Double, floor: Double)] {
        [
            ("resident memory (MiB)", \.residentBytes, 1_048_576, 64),
            ("open files", \.openFiles, 1, 32),
            ("disk use (MiB)", \.diskBytes, 1_048_576, 128),
            ("chunk metadata log (MiB)", \.metaLogBytes, 1_048_576, 8),
        ]
    }

    /// One node's samples of one metric, in the metric's unit.
    static func series(_ samples: [Sample], node: String, metric name: String) -> [(seconds: Double, value: Double)] {
        guard let m = metrics.first(where: { $0.name == name }) else { return [] }
        return samples.filter { $0.node == node }.map { (seconds: $0.seconds, value: $0[keyPath: m.value] / m.unitBytes) }
    }

    /// `items` in consecutive batches of at most `size`.
    static func batches<T>(_ items: [T], of size: Int) -> [[T]] {
        stride(from: 0, to: items.count, by: size).map { Array(items[$0..<min($0 + size, items.count)]) }
    }

    /// Runs shorter than this are too short to say whether anything levelled off.
    public static let judgedRunSecondsMin: Double = 600

    static func trends(_ samples: [Sample], judge: Bool) -> [(node: String, metric: String, trend: SoakTrend)] {
        var out: [(node: String, metric: String, trend: SoakTrend)] = []
        for node in Set(samples.map(\.node)).sorted() {
            for m in metrics where node.hasPrefix("storage") || m.value != \Sample.metaLogBytes {
                out.append((node, m.name, judge ? SoakTrend.judge(series(samples, node: node, metric: m.name), floor: m.floor) : .tooShort))
            }
        }
        return out
    }

    /// One sample of every running process: from /proc and the node's directories.
    static func sample(_ cluster: LocalCluster, nodes: [(name: String, role: String)], atSeconds t: Double) -> [Sample] {
        let running = cluster.runningNodes()
        var out: [Sample] = []
        for (name, role) in nodes {
            guard let pid = running[name] else { continue }
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let rssKiB = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
            guard rssKiB > 0 else { continue }  // killed, not yet reaped
            let fds = Double(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count)
            let dirs: [String]
            switch role {
            case "storage": dirs = [cluster.path("data", name)]
            case "meta": dirs = [cluster.path("kv", "meta")]
            default: dirs = []
            }
            var disk = dirs.reduce(0.0) { $0 + size(of: $1, metaLog: false) }
            if role == "mgmtd" {
                disk = ((try? FileManager.default.contentsOfDirectory(atPath: cluster.path("kv"))) ?? []).filter { $0.hasPrefix("mgmtd.sqlite") }
                    .reduce(0.0) { $0 + size(of: cluster.path("kv", $1), metaLog: false) }
            }
            let log = role == "storage" ? size(of: cluster.path("data", name), metaLog: true) : 0
            out.append(Sample(seconds: t, node: name, residentBytes: rssKiB * 1024, openFiles: fds, diskBytes: disk, metaLogBytes: log))
        }
        return out
    }

    /// Bytes allocated under `path` (a file or a tree); only the chunk metadata logs
    /// when `metaLog`.
    static func size(of path: String, metaLog: Bool) -> Double {
        func allocated(_ p: String) -> Double {
            var st = stat()
            guard lstat(p, &st) == 0 else { return 0 }
            return Double(st.st_blocks) * 512
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { return 0 }
        guard isDir.boolValue else { return metaLog ? 0 : allocated(path) }
        var total = 0.0
        for rel in FileManager.default.enumerator(atPath: path)?.compactMap({ $0 as? String }) ?? [] {
            let name = (rel as NSString).lastPathComponent
            if metaLog && name != "meta.log" && name != "meta-b.log" { continue }
            total += allocated(path + "/" + rel)
        }
        return total
    }

    /// The report as text: counts, faults, checks and the trend table.
    public static func format(_ r: Report) -> String {
        var out = "soak: \(Int(r.options.durationSeconds)) s, seed \(r.options.seed), \(r.faults.count) faults (kill -9 and restart)\n"
        out += "  pages: \(r.pagesStored) stored, \(r.pagesDeleted) deleted; files: \(r.filesWritten) written, \(r.filesRemoved) removed; writes failed during faults: \(r.writesFailed)\n"
        out += "  reads checked during the run: \(r.readsChecked) (\(r.readsFailed) failed during faults, not counted as loss)\n"
        out += "  at the end: \(r.finalPagesChecked) acknowledged pages and \(r.finalFilesChecked) files read back exactly\n"
        if let u = r.namespaceUsage { out += "  KV namespace at the end: \(u)\n" }
        if !r.wrong.isEmpty { out += "  WRONG BYTES (\(r.wrong.count)): \(r.wrong.prefix(10).joined(separator: ", "))\n" }
        if !r.lost.isEmpty { out += "  LOST (\(r.lost.count)): \(r.lost.prefix(10).joined(separator: ", "))\n" }
        if !r.unreadableAtEnd.isEmpty { out += "  UNREADABLE AT THE END (\(r.unreadableAtEnd.count)): \(r.unreadableAtEnd.prefix(5).joined(separator: "; "))\n" }
        for f in r.restartFailures { out += "  RESTART FAILED: \(f)\n" }
        if let s = r.notSettled { out += "  NOT SETTLED: \(s)\n" }
        out += "  faults:\n" + r.faults.map { "    \($0)\n" }.joined()
        out += "  resources (first / peak / last sample; the trend leaves out the first quarter):\n"
        for t in r.trends {
            let values = series(r.samples, node: t.node, metric: t.metric).map(\.value)
            let first = values.first ?? 0, peak = values.max() ?? 0, last = values.last ?? 0
            out += "    " + t.node.padding(toLength: 10, withPad: " ", startingAt: 0) + t.metric.padding(toLength: 26, withPad: " ", startingAt: 0)
                + "\(SoakTrend.format(first)) / \(SoakTrend.format(peak)) / \(SoakTrend.format(last))".padding(toLength: 26, withPad: " ", startingAt: 0) + "\(t.trend)\n"
        }
        out += r.ok ? "  PASS: every acknowledged page and file intact, resources levelled off\n"
            : "  FAIL; replay the same fault schedule: cistern soak --seed \(r.options.seed) --minutes \(r.options.durationSeconds / 60)\n"
        return out
    }
}
