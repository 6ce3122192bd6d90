import Cistern
import CisternBench
import Foundation

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
        public var figure: String
        public var pageBytes: Int
        public var bytesPerSecond: Double
        public var pagesPerSecond: Double
    }

    public struct Report: Codable, Sendable {
        public var loopbackTCPBytesPerSecond: Double
        public var diskSequentialWriteBytesPerSecond: Double
        public var diskSequentialReadBytesPerSecond: Double
        public var rows: [Row]
        public var notes: [String]
    }

    /// Runs everything; `progress` gets a line per step.
    public static func run(binary: String, workDir: String, storageNodes: Int = 3, batch: Int = 128, bytesPerSize: Int = 256 << 20,
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
        try await cluster.up(storageNodes: storageNodes, binary: binary)
        do {
            let session = try await ClientSession.connect(cluster, name: "bench")
            for pageBytes in [64 << 10, 1 << 20] {
                let pages = max(batch, bytesPerSize / pageBytes / batch * batch)
                let ns = try await session.client.kvNamespace("bench\(pageBytes >> 10)k", pageBytes: pageBytes, capacityPages: UInt64(pages), files: 4)
                let payload = (0..<pageBytes).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                progress("cistern put \(pages) pages of \(pageBytes >> 10) KiB in batches of \(batch)")
                var start = Date()
                for b in stride(from: 0, to: pages, by: batch) {
                    let outcomes = try await ns.put((b..<b + batch).map { ("p\($0)", payload) })
                    if let bad = outcomes.first(where: { !$0.isStored }) { notes.append("put \(pageBytes): \(bad)") }
                }
                var seconds = Date().timeIntervalSince(start)
                rows.append(Row(figure: "cistern kv put", pageBytes: pageBytes, bytesPerSecond: Double(pages * pageBytes) / seconds, pagesPerSecond: Double(pages) / seconds))
                progress("cistern get")
                start = Date()
                for b in stride(from: 0, to: pages, by: batch) {
                    let got = try await ns.get((b..<b + batch).map { "p\($0)" })
                    if let bad = got.first(where: { $0.bytes?.count != pageBytes }) { notes.append("get \(pageBytes): \(bad == .missing ? "missing" : "failed")") }
                }
                seconds = Date().timeIntervalSince(start)
                rows.append(Row(figure: "cistern kv get", pageBytes: pageBytes, bytesPerSecond: Double(pages * pageBytes) / seconds, pagesPerSecond: Double(pages) / seconds))
                let durable = try await session.client.kvNamespace("bench\(pageBytes >> 10)k-durable", pageBytes: pageBytes, capacityPages: UInt64(pages), files: 4, durability: .durable)
                progress("cistern put, durable namespace")
                start = Date()
                for b in stride(from: 0, to: pages, by: batch) {
                    let outcomes = try await durable.put((b..<b + batch).map { ("p\($0)", payload) })
                    if let bad = outcomes.first(where: { !$0.isStored }) { notes.append("durable put \(pageBytes): \(bad)") }
                }
                seconds = Date().timeIntervalSince(start)
                rows.append(Row(figure: "cistern kv put (durable)", pageBytes: pageBytes, bytesPerSecond: Double(pages * pageBytes) / seconds, pagesPerSecond: Double(pages) / seconds))
                progress("redis-server at the same page size and batch")
                do {
                    let (set, get) = try redis(pageBytes: pageBytes, pages: pages, batch: batch)
                    rows.append(Row(figure: "redis SET (pipelined)", pageBytes: pageBytes, bytesPerSecond: set, pagesPerSecond: set / Double(pageBytes)))
                    rows.append(Row(figure: "redis GET (pipelined)", pageBytes: pageBytes, bytesPerSecond: get, pagesPerSecond: get / Double(pageBytes)))
                } catch {
                    notes.append("redis: \(error)")
                }
            }
            await session.close()
        } catch {
            try? await cluster.down()
            throw error
        }
        try await cluster.down()
        notes.append("cistern: 3-way replicated (CRAQ) pages; put: cache durability (acknowledged when all 3 replicas hold the page, flushed by group commit behind it); put (durable): acknowledged after every replica's fsync (group commit); client, servers and redis share this machine's cores")
        notes.append("redis: in memory, no persistence (--save '' --appendonly no), one connection pipelining a batch")
        return Report(loopbackTCPBytesPerSecond: tcp, diskSequentialWriteBytesPerSecond: disk.sequentialWriteBytesPerSecond,
                      diskSequentialReadBytesPerSecond: disk.sequentialReadBytesPerSecond, rows: rows, notes: notes)
    }

    /// Prints the report as a table with ratios to the limits.
    public static func format(_ r: Report) -> String {
        func mb(_ b: Double) -> String { String(format: "%8.1f MB/s", b / 1e6) }
        var out = "limits measured in this run:\n"
        out += "  loopback TCP stream      \(mb(r.loopbackTCPBytesPerSecond))\n"
        out += "  disk sequential write    \(mb(r.diskSequentialWriteBytesPerSecond))  (O_DIRECT)\n"
        out += "  disk sequential read     \(mb(r.diskSequentialReadBytesPerSecond))  (O_DIRECT)\n\n"
        out += "figure                    page      throughput     pages/s   vs TCP   vs disk\n"
        for row in r.rows {
            let diskLimit = row.figure.contains("put") || row.figure.contains("SET") ? r.diskSequentialWriteBytesPerSecond : r.diskSequentialReadBytesPerSecond
            let name = row.figure.padding(toLength: 24, withPad: " ", startingAt: 0)
            out += name + String(format: " %5d KiB  ", row.pageBytes >> 10) + mb(row.bytesPerSecond)
                + String(format: "  %10.0f   %5.2fx   %5.2fx\n", row.pagesPerSecond, row.bytesPerSecond / r.loopbackTCPBytesPerSecond, row.bytesPerSecond / diskLimit)
        }
        for n in r.notes { out += "note: \(n)\n" }
        return out
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
    static func redis(pageBytes: Int, pages: Int, batch: Int) throws -> (set: Double, get: Double) {
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
        defer { close(fd) }
        let conn = RESPConnection(fd: fd)
        let payload = [UInt8](repeating: 0x5A, count: pageBytes)
        var start = Date()
        for b in stride(from: 0, to: pages, by: batch) {
            var out: [UInt8] = []
            for i in b..<b + batch { out += conn.command(["SET", "p\(i)"], payload: payload) }
            try conn.send(out)
            for _ in 0..<batch { _ = try conn.readReply() }
        }
        let set = Double(pages * pageBytes) / Date().timeIntervalSince(start)
        start = Date()
        for b in stride(from: 0, to: pages, by: batch) {
            var out: [UInt8] = []
            for i in b..<b + batch { out += conn.command(["GET", "p\(i)"], payload: nil) }
            try conn.send(out)
            for _ in 0..<batch {
                guard try conn.readReply() == pageBytes else { throw LocalClusterError.io("redis GET returned another length") }
            }
        }
        let get = Double(pages * pageBytes) / Date().timeIntervalSince(start)
        return (set, get)
    }
}

/// The little of the Redis protocol (RESP2) the benchmark needs.
final class RESPConnection {
    let fd: Int32
    var buffer: [UInt8] = []
    var position = 0

    init(fd: Int32) { self.fd = fd }

    func command(_ parts: [String], payload: [UInt8]?) -> [UInt8] {
        let count = parts.count + (payload == nil ? 0 : 1)
        var out = Array("*\(count)\r\n".utf8)
        for p in parts { out += Array("$\(p.utf8.count)\r\n\(p)\r\n".utf8) }
        if let payload { out += Array("$\(payload.count)\r\n".utf8) + payload + [13, 10] }
        return out
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
        if position > 0 {
            buffer.removeFirst(position)
            position = 0
        }
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        let n = read(fd, &chunk, chunk.count)
        guard n > 0 else { throw LocalClusterError.io("redis: connection closed") }
        buffer += chunk[0..<n]
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
