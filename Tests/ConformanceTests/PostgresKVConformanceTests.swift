import CisternConformance
import CisternCore
import CisternNIO
import CisternPostgres
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A throwaway PostgreSQL server on 127.0.0.1, started and stopped with
/// scripts/postgres-test-server.sh in its own temporary directory.
final class PostgresTestServer: Sendable {
    let directory: String
    let port: Int
    private let stopped = Atomic<Bool>(false)

    private static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/postgres-test-server.sh").path
    /// Servers started by this process, so parallel tests get different ports.
    private static let started = Atomic<Int>(0)

    private init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
    }

    /// A libpq connection string for `database` on this server (loopback only).
    func conninfo(database: String = "postgres") -> String {
        "host=127.0.0.1 port=\(port) user=postgres dbname=\(database) connect_timeout=10"
    }

    /// Starts a new server on a free port above 20000, chosen from the process id (and
    /// moved on when taken).
    static func start() async throws -> PostgresTestServer {
        // /tmp when there is one: as root the server runs as "postgres", which must reach
        // the directory, and the unix socket's path must stay short.
        var isDirectory: ObjCBool = false
        let base = FileManager.default.fileExists(atPath: "/tmp", isDirectory: &isDirectory) && isDirectory.boolValue
            ? "/tmp" : FileManager.default.temporaryDirectory.path
        let pid = Int(getpid())
        var failures: [String] = []
        for _ in 0..<8 {
            let index = started.add(1, ordering: .relaxed).newValue
            let port = 20_000 + (pid &* 31 &+ index &* 997) % 12_000
            guard portIsFree(port) else {
                failures.append("port \(port) is taken")
                continue
            }
            let directory = "\(base)/cistern-pg-\(pid)-\(index)"
            let result = try await runScript(["start", directory, String(port)])
            if result.status == 0 { return PostgresTestServer(directory: directory, port: port) }
            _ = try? await runScript(["stop", directory, String(port)])
            if result.status == 3 {
                // The binaries (or the postgres user) are missing: retrying will not help.
                throw ServerError(message: result.output.isEmpty ? "run scripts/deps.sh" : result.output)
            }
            failures.append("port \(port): \(result.output)")
        }
        throw ServerError(message: "could not start a test PostgreSQL server: " + failures.joined(separator: "; "))
    }

    /// Creates database `name` on this server.
    func createDatabase(_ name: String) async throws {
        let result = try await Self.runScript(["createdb", directory, String(port), name])
        if result.status != 0 { throw ServerError(message: "createdb \(name) failed: \(result.output)") }
    }

    /// Stops the server and removes its directory (idempotent).
    func stop() async {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        _ = try? await Self.runScript(["stop", directory, String(port)])
    }

    /// Runs `body` with a new server, stopping it afterwards whatever happens.
    static func with(_ body: (PostgresTestServer) async throws -> Void) async throws {
        let server = try await start()
        do {
            try await body(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    struct ServerError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    private static func portIsFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return bound == 0
    }

    /// Runs the script with `arguments` (no stdin), returning its exit status and
    /// combined output without blocking a cooperative thread.
    private static func runScript(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let log = FileManager.default.temporaryDirectory.path + "/cistern-pg-script-\(UUID().uuidString).log"
        guard FileManager.default.createFile(atPath: log, contents: nil), let handle = FileHandle(forWritingAtPath: log) else {
            throw ServerError(message: "cannot create \(log)")
        }
        defer {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: log)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = handle
        process.standardError = handle
        let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
            process.terminationHandler = { process in continuation.resume(returning: process.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return (status, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// Fresh `PostgresKV` stores, each in a new database of one throwaway server.
final class PostgresKVHarness: KVHarness {
    let runtime: any Runtime = ProductionRuntime(nodeName: "postgres-kv-test")
    let server: PostgresTestServer
    private let stores = Mutex<[PostgresKV]>([])

    init(server: PostgresTestServer) {
        self.server = server
    }

    func makeStore() async throws -> any TransactionalKV {
        let name = "store\(stores.withLock { $0.count } + 1)"
        try await server.createDatabase(name)
        let store = try PostgresKV(conninfo: server.conninfo(database: name))
        stores.withLock { $0.append(store) }
        return store
    }

    func finish() async {
        for store in stores.withLock({ $0 }) { await store.close() }
    }
}

@Suite struct PostgresKVConformanceTests {
    @Test func passesTheKVConformanceSuite() async throws {
        try await PostgresTestServer.with { server in
            let harness = PostgresKVHarness(server: server)
            do {
                try await KVConformance.run(harness)
            } catch {
                await harness.finish()
                throw error
            }
            await harness.finish()
        }
    }

    /// Two stores (two metadata servers) on one database: 4 workers × 25
    /// read-increment-write transactions through `transact` give exactly 100.
    @Test func twoStoresOnOneDatabaseIncrementExactly() async throws {
        try await PostgresTestServer.with { server in
            let runtime = ProductionRuntime(nodeName: "postgres-kv-shared")
            let first = try PostgresKV(conninfo: server.conninfo())
            let second = try PostgresKV(conninfo: server.conninfo())
            let attempts = Counter()
            let counter: [UInt8] = Array("counter".utf8)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    let store = worker % 2 == 0 ? first : second
                    group.addTask {
                        for _ in 0..<25 {
                            try await store.transact(runtime: runtime, attemptsMax: 200) { tx in
                                attempts.value.add(1, ordering: .relaxed)
                                let value = Self.decode(try await tx.get(counter))
                                try await tx.set(counter, Self.encode(value + 1))
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let final = try await second.attempt { tx in Self.decode(try await tx.get(counter)) }
            #expect(final == 100)
            let tries = attempts.value.load(ordering: .relaxed)
            #expect(tries >= 100)
            print("PostgresKV: 100 increments from two stores took \(tries) attempts")
            await first.close()
            await second.close()
        }
    }

    /// A server that stops under a store gives `unavailable` or `maybeCommitted`
    /// (never a crash or a hang), and a store cannot be opened against it.
    @Test func aStoppedServerIsUnavailable() async throws {
        try await PostgresTestServer.with { server in
            let store = try PostgresKV(conninfo: server.conninfo())
            try await store.attempt { tx in try await tx.set([1], [1]) }

            // A database that does not exist: unavailable, naming it.
            do {
                _ = try PostgresKV(conninfo: server.conninfo(database: "missing"))
                Issue.record("opening a missing database should fail")
            } catch {
                guard case .unavailable(let reason)? = error as? KVError else {
                    Issue.record("expected unavailable, got \(error)")
                    return
                }
                #expect(reason.contains("missing"), "\(reason)")
            }
            // A connection string libpq cannot parse: storage.
            #expect(throws: KVError.self) { _ = try PostgresKV(conninfo: "host=127.0.0.1 nonsense_option=1") }

            // The server stops in the middle of a transaction.
            let midway: (any Error)?
            do {
                try await store.attempt { tx in
                    _ = try await tx.get([1])
                    await server.stop()
                    try await tx.set([2], [2])
                }
                midway = nil
            } catch {
                midway = error
            }
            #expect(Self.isOutage(midway), "a transaction across the stop: \(String(describing: midway))")

            // Later transactions: unavailable (connection refused), through transact too.
            for _ in 0..<3 {
                let later: (any Error)?
                do {
                    _ = try await store.attempt { tx in try await tx.get([1]) }
                    later = nil
                } catch {
                    later = error
                }
                #expect(Self.isOutage(later), "a transaction after the stop: \(String(describing: later))")
                if case .unavailable(let reason)? = later as? KVError {
                    #expect(reason.contains("127.0.0.1"), "\(reason)")
                }
            }
            let runtime = ProductionRuntime(nodeName: "postgres-kv-outage")
            do {
                _ = try await store.transact(runtime: runtime, attemptsMax: 2) { tx in try await tx.get([1]) }
                Issue.record("transact against a stopped server should fail")
            } catch let error as KVError {
                guard case .retriesExhausted(2, .unavailable) = error else {
                    Issue.record("expected retriesExhausted(2, unavailable), got \(error)")
                    return
                }
            }
            do {
                _ = try PostgresKV(conninfo: server.conninfo())
                Issue.record("connecting to a stopped server should fail")
            } catch {
                guard case .unavailable? = error as? KVError else {
                    Issue.record("expected unavailable, got \(error)")
                    return
                }
            }
            await store.close()
        }
    }

    /// Interleaved serializable transactions: the loser gets `conflict`, whether the
    /// server notices at a statement or at commit, and even if the body swallows the
    /// failed statement's error.
    @Test func interleavedTransactionsConflict() async throws {
        try await PostgresTestServer.with { server in
            let store = try PostgresKV(conninfo: server.conninfo())
            let other = try PostgresKV(conninfo: server.conninfo())
            let x: [UInt8] = [0x78]
            let (k1, k2): ([UInt8], [UInt8]) = ([0x6B, 1], [0x6B, 2])
            try await store.attempt { tx in
                try await tx.set(x, [0])
                try await tx.set(k1, [0])
                try await tx.set(k2, [0])
            }

            // Lost update: A reads x, B updates x and commits, A's write of x fails.
            await #expect(throws: KVError.conflict) {
                try await store.attempt { tx in
                    _ = try await tx.get(x)
                    try await other.attempt { tx in
                        _ = try await tx.get(x)
                        try await tx.set(x, [1])
                    }
                    try await tx.set(x, [2])
                }
            }

            // The same, but A's body swallows the error: the commit still fails.
            let later = Mutex<String>("did not run")
            await #expect(throws: KVError.conflict) {
                try await store.attempt { tx in
                    _ = try await tx.get(x)
                    try await other.attempt { tx in try await tx.set(x, [3]) }
                    _ = try? await tx.set(x, [4])
                    // Later calls fail with the first failure's error too.
                    do {
                        _ = try await tx.get(k1)
                        later.withLock { $0 = "succeeded" }
                    } catch {
                        later.withLock { $0 = "\(error)" }
                    }
                }
            }
            #expect(later.withLock { $0 } == "\(KVError.conflict)", "a call after a failed statement")

            // Write skew: A and B each read both keys and write the one the other did
            // not; serializable lets at most one of them commit, the other gets
            // `conflict` (B, inside A, commits first, so A normally loses at COMMIT).
            let inner = Mutex<String>("did not run")
            await #expect(throws: KVError.conflict) {
                try await store.attempt { tx in
                    _ = try await tx.get(k1)
                    _ = try await tx.get(k2)
                    try await tx.set(k1, [5])
                    do {
                        try await store.attempt { tx in
                            _ = try await tx.get(k1)
                            _ = try await tx.get(k2)
                            try await tx.set(k2, [6])
                        }
                        inner.withLock { $0 = "committed" }
                    } catch {
                        inner.withLock { $0 = "\(error)" }
                        throw error
                    }
                }
            }
            let values = try await other.attempt { tx in
                [try await tx.get(x), try await tx.get(k1), try await tx.get(k2)]
            }
            let outcome = inner.withLock { $0 }
            #expect(values == [[3], [0], [6]], "the inner transaction: \(outcome)")
            await store.close()
            await other.close()
        }
    }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    static func isOutage(_ error: (any Error)?) -> Bool {
        switch error as? KVError {
        case .unavailable?, .maybeCommitted?: return true
        default: return false
        }
    }

    static func encode(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
    }

    static func decode(_ bytes: [UInt8]?) -> UInt64 {
        guard let bytes, bytes.count == 8 else { return 0 }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }
}
