import Cistern
import CisternMaster
import CisternServer
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `cistern bench kv`: KV page put and get throughput through a real loopback
/// cluster (separate processes over TCP), beside the machine's limits measured in the
/// same run: a loopback TCP stream, the disk's sequential write and read (O_DIRECT),
/// and redis-server at the same page size and batch (pipelined SET/GET of a batch).
/// A benchmark: it prints figures and never fails on slow ones.
public enum KVBenchmark {
    public struct Row: Codable, Sendable {
        /// "cistern", "cistern (durable)", "cistern (HTTP)", "redis" or "mooncake".
        public var system: String
        /// "put" or "get".
        public var operation: String
        public var pageBytes: Int
        /// Concurrent clients, each moving batches of the batch size.
        public var streams: Int
        public var bytesPerSecond: Double
        public var pagesPerSecond: Double { bytesPerSecond / Double(pageBytes) }
    }

    public struct Report: Codable, Sendable {
        public var loopbackTCPBytesPerSecond: Double
        public var diskSequentialWriteBytesPerSecond: Double
        public var diskSequentialReadBytesPerSecond: Double
        public var rows: [Row]
        public var notes: [String]
    }

    /// Streams each figure is measured with: one client, and four at once (as
    /// SGLang's HiCache storage threads do).
    public static let streamCounts = [1, 4]

    /// Runs everything; `progress` gets a line per step. `python` runs
    /// `scripts/bench_mooncake.py` (nil: Mooncake Store is left out, with a note).
    public static func run(binary: String, workDir: String, storageNodes: Int = 3, targetsPerNode: Int = 4, batch: Int = 128, bytesPerSize: Int = 256 << 20,
                           python: String? = nil, mooncakeScript: String? = nil, nativeOnly: Bool = false,
                           progress: @Sendable (String) -> Void) async throws -> Report {
        var notes: [String] = []
        progress("loopback TCP limit")
        let tcp = try loopbackTCP(bytes: 2 << 30)
        progress("disk limits (O_DIRECT, 512 MiB file)")
        var diskOptions = RawDiskBenchmark.Options()
        diskOptions.fileBytes = 512 << 20
        diskOptions.randomSeconds = 0.5
        try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
        let disk = try RawDiskBenchmark.measure(directory: workDir, options: diskOptions)
        var rows: [Row] = []
        let cluster = LocalCluster(dataDir: workDir + "/cluster")
        progress("starting a local cluster (\(storageNodes) storage nodes)")
        try await cluster.up(storageNodes: storageNodes, targetsPerNode: targetsPerNode, master: true, binary: binary)
        do {
            let session = try await ClientSession.connect(cluster, name: "bench")
            let http = try await HTTPBench.connect(cluster)
            for pageBytes in [64 << 10, 1 << 20] {
                let pages = max(batch, bytesPerSize / pageBytes / batch * batch)
                let payload = (0..<pageBytes).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                for streams in streamCounts {
                    for durability in nativeOnly ? [KVDurability.cache] : [KVDurability.cache, .durable] {
                        let system = durability == .cache ? "cistern" : "cistern (durable)"
                        let ns = try await session.client.kvNamespace("bench\(pageBytes >> 10)k-\(durability)-\(streams)", pageBytes: pageBytes,
                                                                      capacityPages: UInt64(pages), files: 4, durability: durability)
                        progress("\(system) put \(pages) pages of \(pageBytes >> 10) KiB in batches of \(batch), \(streams) stream(s)")
                        let put = try await timed(streams: streams, pages: pages, batch: batch) { keys in
                            let outcomes = try await ns.put(keys.map { ($0, payload) })
                            return outcomes.first(where: { !$0.isStored }).map { "\(system) put \(pageBytes): \($0)" }
                        }
                        rows.append(Row(system: system, operation: "put", pageBytes: pageBytes, streams: streams, bytesPerSecond: Double(pages * pageBytes) / put.seconds))
                        notes += put.notes
                        guard durability == .cache else { continue }
                        progress("cistern get, \(streams) stream(s)")
                        let get = try await timed(streams: streams, pages: pages, batch: batch) { keys in
                            let got = try await ns.get(keys)
                            return got.first(where: { $0.bytes?.count != pageBytes }).map { "get \(pageBytes): \($0 == .missing ? "missing" : "failed")" }
                        }
                        rows.append(Row(system: "cistern", operation: "get", pageBytes: pageBytes, streams: streams, bytesPerSecond: Double(pages * pageBytes) / get.seconds))
                        notes += get.notes
                    }
                    if nativeOnly { continue }
                    // The same pages through the master's HTTP batch endpoints (bodies of
                    // at most 32 MiB: a batch of 1 MiB pages goes as several requests).
                    let name = "http\(pageBytes >> 10)k-\(streams)"
                    try await http.createNamespace(name, pageBytes: pageBytes, capacityPages: pages)
                    let perRequest = max(1, min(batch, (32 << 20) / pageBytes))
                    progress("cistern put and get through the master's HTTP API, \(streams) stream(s)")
                    let hput = try await timed(streams: streams, pages: pages, batch: batch) { keys in
                        for part in stride(from: 0, to: keys.count, by: perRequest) {
                            if let problem = try await http.put(name, Array(keys[part..<min(keys.count, part + perRequest)]), payload) { return problem }
                        }
                        return nil
                    }
                    rows.append(Row(system: "cistern (HTTP)", operation: "put", pageBytes: pageBytes, streams: streams, bytesPerSecond: Double(pages * pageBytes) / hput.seconds))
                    notes += hput.notes
                    let hget = try await timed(streams: streams, pages: pages, batch: batch) { keys in
                        for part in stride(from: 0, to: keys.count, by: perRequest) {
                            if let problem = try await http.get(name, Array(keys[part..<min(keys.count, part + perRequest)]), pageBytes: pageBytes) { return problem }
                        }
                        return nil
                    }
                    rows.append(Row(system: "cistern (HTTP)", operation: "get", pageBytes: pageBytes, streams: streams, bytesPerSecond: Double(pages * pageBytes) / hget.seconds))
                    notes += hget.notes
                    progress("redis-server, \(streams) connection(s)")
                    do {
                        let (set, get) = try redis(pageBytes: pageBytes, pages: pages, batch: batch, streams: streams)
                        rows.append(Row(system: "redis", operation: "put", pageBytes: pageBytes, streams: streams, bytesPerSecond: set))
                        rows.append(Row(system: "redis", operation: "get", pageBytes: pageBytes, streams: streams, bytesPerSecond: get))
                    } catch {
                        notes.append("redis: \(error)")
                    }
                    if let python, let mooncakeScript {
                        progress("Mooncake Store, \(streams) stream(s)")
                        do {
                            let (put, get) = try mooncake(python: python, script: mooncakeScript, pageBytes: pageBytes, pages: pages, batch: batch, streams: streams)
                            rows.append(Row(system: "mooncake", operation: "put", pageBytes: pageBytes, streams: streams, bytesPerSecond: put))
                            rows.append(Row(system: "mooncake", operation: "get", pageBytes: pageBytes, streams: streams, bytesPerSecond: get))
                        } catch {
                            notes.append("mooncake: \(error)")
                        }
                    }
                }
            }
            await session.close()
        } catch {
            try? await cluster.down()
            throw error
        }
        try await cluster.down()
        notes.append("cistern: \(storageNodes) storage nodes of \(targetsPerNode) targets, 3-way replicated chains (CRAQ), on this machine's disk; put: cache durability (acknowledged when all 3 replicas hold the page in their memory tier, 1 GiB per node; written to disk behind, made durable by group commit); get: from the memory tier when it holds the page (here it holds the pages just put: each get follows its put), else from disk; durable: acknowledged after every replica's fsync (group commit)")
        notes.append("cistern (HTTP): the same cache namespace through the master (one process on this machine) with POST batch/put and batch/get, bodies of at most 32 MiB, from URLSession; the master adds a hop and a copy")
        notes.append("redis: in memory, one copy, no persistence (--save '' --appendonly no), each connection pipelining a batch")
        if python == nil {
            notes.append("mooncake: not measured (no virtual environment with mooncake-transfer-engine-non-cuda; scripts/deps.sh --bench installs it)")
        } else {
            notes.append("mooncake: mooncake_master and one client holding the global segment, TCP transport, one copy in memory, batch_put_from / batch_get_into on registered numpy buffers")
        }
        notes.append("client, servers and peers share this machine's cores; every stream moves its own keys")
        return Report(loopbackTCPBytesPerSecond: tcp, diskSequentialWriteBytesPerSecond: disk.sequentialWriteBytesPerSecond,
                      diskSequentialReadBytesPerSecond: disk.sequentialReadBytesPerSecond, rows: rows, notes: notes)
    }

    /// Runs `body` over `pages` keys in batches of `batch` from `streams` concurrent
    /// tasks (stream s owns keys s, s + streams, ...); the seconds taken and the first
    /// problem each batch reported.
    static func timed(streams: Int, pages: Int, batch: Int, _ body: @escaping @Sendable ([String]) async throws -> String?) async throws -> (seconds: Double, notes: [String]) {
        let start = Date()
        let batches = pages / batch
        let notes = try await withThrowingTaskGroup(of: [String].self) { group in
            for s in 0..<streams {
                group.addTask {
                    var notes: [String] = []
                    for b in stride(from: s, to: batches, by: streams) {
                        if let problem = try await body((b * batch..<(b + 1) * batch).map { "p\($0)" }), notes.isEmpty { notes.append(problem) }
                    }
                    return notes
                }
            }
            var all: [String] = []
            for try await n in group { all += n }
            return all
        }
        return (Date().timeIntervalSince(start), notes)
    }

    /// Prints the report as a table with ratios to the limits and to the peers
    /// measured in the same run (same operation, page size and streams).
    public static func format(_ r: Report) -> String {
        func mb(_ b: Double) -> String { String(format: "%8.1f MB/s", b / 1e6) }
        func ratio(_ row: Row, _ peer: String) -> String {
            guard row.system.hasPrefix("cistern"),
                  let p = r.rows.first(where: { $0.system == peer && $0.operation == row.operation && $0.pageBytes == row.pageBytes && $0.streams == row.streams })
            else { return "      -" }
            return String(format: "%6.2fx", row.bytesPerSecond / p.bytesPerSecond)
        }
        var out = "limits measured in this run:\n"
        out += "  loopback TCP stream      \(mb(r.loopbackTCPBytesPerSecond))\n"
        out += "  disk sequential write    \(mb(r.diskSequentialWriteBytesPerSecond))  (O_DIRECT)\n"
        out += "  disk sequential read     \(mb(r.diskSequentialReadBytesPerSecond))  (O_DIRECT)\n\n"
        out += "system             op    page  streams      throughput     pages/s   vs TCP  vs disk  vs redis  vs mooncake\n"
        for row in r.rows {
            let diskLimit = row.operation == "put" ? r.diskSequentialWriteBytesPerSecond : r.diskSequentialReadBytesPerSecond
            out += row.system.padding(toLength: 18, withPad: " ", startingAt: 0) + " " + row.operation.padding(toLength: 4, withPad: " ", startingAt: 0)
                + String(format: " %5d KiB %4d    ", row.pageBytes >> 10, row.streams) + mb(row.bytesPerSecond)
                + String(format: "  %10.0f   %5.2fx   %5.2fx", row.pagesPerSecond, row.bytesPerSecond / r.loopbackTCPBytesPerSecond, row.bytesPerSecond / diskLimit)
                + "   " + ratio(row, "redis") + "      " + ratio(row, "mooncake") + "\n"
        }
        for n in r.notes { out += "note: \(n)\n" }
        return out
    }

    // MARK: Mooncake Store

    /// Runs `scripts/bench_mooncake.py` with `python`; its put and get bytes per second.
    static func mooncake(python: String, script: String, pageBytes: Int, pages: Int, batch: Int, streams: Int) throws -> (put: Double, get: Double) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [script, "--page-bytes", "\(pageBytes)", "--pages", "\(pages)", "--batch", "\(batch)", "--streams", "\(streams)"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        for _ in 0..<1_200 where p.isRunning { usleep(50_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        struct Answer: Decodable {
            var put_bytes_per_second: Double
            var get_bytes_per_second: Double
            var errors: [String]
        }
        guard let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last,
              let answer = try? JSONDecoder().decode(Answer.self, from: Data(line.utf8))
        else { throw LocalClusterError.io("\(script) printed no result (exit \(p.isRunning ? -1 : p.terminationStatus)); run it by hand to see why") }
        if let e = answer.errors.first { throw LocalClusterError.io("Mooncake Store reported \(e)") }
        return (answer.put_bytes_per_second, answer.get_bytes_per_second)
    }

    // MARK: Loopback TCP

    /// One TCP stream over 127.0.0.1: a thread reads while this one writes 1 MiB blocks.
    public static func loopbackTCP(bytes: Int) throws -> Double {
        let port = try LocalCluster.freePort()
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0,
              listen(listener, 1) == 0 else { throw LocalClusterError.io("loopback bench: bind/listen failed (errno \(errno))") }
        let done = DispatchSemaphore(value: 0)
        let reader = Thread {
            let fd = accept(listener, nil, nil)
            var buf = [UInt8](repeating: 0, count: 1 << 20)
            while fd >= 0 { if read(fd, &buf, buf.count) <= 0 { break } }
            if fd >= 0 { close(fd) }
            done.signal()
        }
        reader.start()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0 else {
            throw LocalClusterError.io("loopback bench: connect failed (errno \(errno))")
        }
        let block = [UInt8](repeating: 7, count: 1 << 20)
        let start = Date()
        var sent = 0
        while sent < bytes {
            let n = block.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            sent += n
        }
        close(fd)
        done.wait()
        return Double(sent) / Date().timeIntervalSince(start)
    }

    // MARK: Redis

    /// SET then GET `pages` values of `pageBytes` on a fresh redis-server, pipelining
    /// `batch` commands per round trip; returns bytes per second of each.
    static func redis(pageBytes: Int, pages: Int, batch: Int, streams: Int = 1) throws -> (set: Double, get: Double) {
        guard let server = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw LocalClusterError.io("redis-server is not installed (scripts/deps.sh --bench installs it)")
        }
        let port = try LocalCluster.freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: server)
        p.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--proto-max-bulk-len", "\(max(pageBytes * 2, 512 << 20))", "--client-query-buffer-limit", "1gb"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer {
            // The child inherits this thread's signal mask, in which the Swift runtime's
            // threads block SIGTERM, so redis never sees it (two servers outlived every
            // run). SIGTERM for a clean exit where it is not blocked, then SIGKILL, which
            // cannot be blocked, and wait until the process is gone. Not waitUntilExit:
            // it can hang when called off the main thread.
            p.terminate()
            for _ in 0..<20 where p.isRunning { usleep(50_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            for _ in 0..<100 where p.isRunning { usleep(50_000) }
        }
        var connections: [RESPConnection] = []
        defer { for c in connections { close(c.fd) } }
        for _ in 0..<streams {
            var fd: Int32 = -1
            for _ in 0..<100 {
                fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_addr.s_addr = inet_addr("127.0.0.1")
                addr.sin_port = port.bigEndian
                if withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0 { break }
                close(fd)
                fd = -1
                usleep(50_000)
            }
            guard fd >= 0 else { throw LocalClusterError.io("redis-server did not accept connections on port \(port)") }
            connections.append(RESPConnection(fd: fd))
        }
        let payload = [UInt8](repeating: 0x5A, count: pageBytes)
        let batches = pages / batch
        /// Each connection on its own thread pipelines its batches (keys of stream s:
        /// batches s, s + streams, ...); the seconds all of them took.
        func run(_ command: @escaping @Sendable (RESPConnection, Int) throws -> Void) throws -> Double {
            let failure = Mutex<String?>(nil)
            let group = DispatchGroup()
            let start = Date()
            for (s, c) in connections.enumerated() {
                group.enter()
                Thread {
                    defer { group.leave() }
                    do {
                        for b in stride(from: s, to: batches, by: streams) { try command(c, b) }
                    } catch {
                        failure.withLock { $0 = $0 ?? "\(error)" }
                    }
                }.start()
            }
            group.wait()
            if let f = failure.withLock({ $0 }) { throw LocalClusterError.io(f) }
            return Date().timeIntervalSince(start)
        }
        let setSeconds = try run { conn, b in
            var out: [UInt8] = []
            out.reserveCapacity(batch * (pageBytes + 64))
            for i in b * batch..<(b + 1) * batch { conn.command(["SET", "p\(i)"], payload: payload, into: &out) }
            try conn.send(out)
            for _ in 0..<batch { _ = try conn.readReply() }
        }
        let getSeconds = try run { conn, b in
            var out: [UInt8] = []
            for i in b * batch..<(b + 1) * batch { conn.command(["GET", "p\(i)"], payload: nil, into: &out) }
            try conn.send(out)
            for _ in 0..<batch {
                guard try conn.readReply() == pageBytes else { throw LocalClusterError.io("redis GET returned another length") }
            }
        }
        let bytes = Double(batches * batch * pageBytes)
        return (bytes / setSeconds, bytes / getSeconds)
    }
}

/// The little of the Redis protocol (RESP2) the benchmark needs.
final class RESPConnection: @unchecked Sendable {
    let fd: Int32
    var buffer: [UInt8] = []
    var position = 0
    /// Reused for every read, so the client is not what limits redis.
    private var chunk = [UInt8](repeating: 0, count: 1 << 20)

    init(fd: Int32) { self.fd = fd }

    func command(_ parts: [String], payload: [UInt8]?, into out: inout [UInt8]) {
        let count = parts.count + (payload == nil ? 0 : 1)
        out += Array("*\(count)\r\n".utf8)
        for p in parts { out += Array("$\(p.utf8.count)\r\n\(p)\r\n".utf8) }
        if let payload {
            out += Array("$\(payload.count)\r\n".utf8)
            out += payload
            out += [13, 10]
        }
    }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + sent, bytes.count - sent) }
            guard n > 0 else { throw LocalClusterError.io("redis: write failed (errno \(errno))") }
            sent += n
        }
    }

    func fill() throws {
        if position == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            position = 0
        } else if position > 4 << 20 {
            buffer.removeFirst(position)
            position = 0
        }
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw LocalClusterError.io("redis: connection closed") }
        buffer.append(contentsOf: chunk[0..<n])
    }

    func line() throws -> String {
        while true {
            if let cr = buffer[position...].firstIndex(of: 13), cr + 1 < buffer.count {
                let s = String(decoding: buffer[position..<cr], as: UTF8.self)
                position = cr + 2
                return s
            }
            try fill()
        }
    }

    /// Reads one reply; returns the bulk length (0 for a status reply).
    func readReply() throws -> Int {
        let head = try line()
        switch head.first {
        case "+": return 0
        case "-": throw LocalClusterError.io("redis: \(head)")
        case "$":
            let n = Int(head.dropFirst()) ?? -1
            if n < 0 { return -1 }
            while buffer.count - position < n + 2 { try fill() }
            position += n + 2
            return n
        default: throw LocalClusterError.io("redis: unexpected reply '\(head)'")
        }
    }
}

/// A tenant of the bench cluster's master and its batch endpoints.
struct HTTPBench: Sendable {
    let base: String
    let token: String

    static func connect(_ cluster: LocalCluster) async throws -> HTTPBench {
        guard let base = cluster.masterURL() else { throw LocalClusterError.startFailed("the bench cluster has no master") }
        let admin = HTTPBench(base: base, token: try cluster.adminToken())
        _ = try await admin.call("POST", "/v1/tenants", json: #"{"name":"bench","quotaBytes":17179869184,"quotaPages":1048576}"#, expect: 201)
        let issued = try await admin.call("POST", "/v1/tenants/bench/tokens", json: "{}", expect: 201)
        guard let object = try JSONSerialization.jsonObject(with: issued) as? [String: Any], let token = object["token"] as? String else {
            throw LocalClusterError.startFailed("the master issued no token")
        }
        return HTTPBench(base: base, token: token)
    }

    func call(_ method: String, _ path: String, json: String? = nil, body: Data? = nil, expect: Int = 200) async throws -> Data {
        var r = URLRequest(url: URL(string: base + path)!)
        r.httpMethod = method
        r.timeoutInterval = 120
        r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        if let json { r.httpBody = Data(json.utf8) } else if let body { r.httpBody = body }
        let (data, response) = try await URLSession.shared.data(for: r)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == expect else { throw LocalClusterError.io("\(method) \(path): HTTP \(status): \(String(decoding: data.prefix(300), as: UTF8.self))") }
        return data
    }

    func createNamespace(_ name: String, pageBytes: Int, capacityPages: Int) async throws {
        _ = try await call("POST", "/v1/namespaces", json: #"{"name":"\#(name)","pageBytes":\#(pageBytes),"capacityPages":\#(capacityPages)}"#, expect: 201)
    }

    /// Puts one request's pages; the first page not stored, if any.
    func put(_ ns: String, _ keys: [String], _ payload: [UInt8]) async throws -> String? {
        let body = Data(PageFraming.encode(keys.map { ($0, payload) }).readableBytesView)
        let answer = try await call("POST", "/v1/namespaces/\(ns)/batch/put", body: body)
        let text = String(decoding: answer, as: UTF8.self)
        return text.contains(#""outcome":"stored""#) && !text.contains(#""outcome":"f"#) && !text.contains("no_space") ? nil : "HTTP put: \(text.prefix(200))"
    }

    /// Gets one request's pages; a problem if any page is missing or the wrong size.
    func get(_ ns: String, _ keys: [String], pageBytes: Int) async throws -> String? {
        let json = "{\"keys\":[" + keys.map { "\"\($0)\"" }.joined(separator: ",") + "]}"
        let answer = try await call("POST", "/v1/namespaces/\(ns)/batch/get", json: json)
        let expected = keys.reduce(0) { $0 + 8 + $1.utf8.count + pageBytes }
        return answer.count == expected ? nil : "HTTP get: \(answer.count) bytes, expected \(expected)"
    }
}
