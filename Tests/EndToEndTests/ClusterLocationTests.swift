import CisternServer
import Foundation
import Testing

/// How clients (the CLI, libcistern, the Python package) find a cluster from what a
/// user passes: a cluster.yaml, a `cistern up` data directory, or inline addresses.
@Suite struct ClusterLocationTests {
    @Test func inlineAddressesParseInAnyRoleOrder() throws {
        let a = try ServerConfig.Cluster.locate("mgmtd=1@127.0.0.1:9001,2@[::1]:9002;meta=10@db.local:9010")
        #expect(a.mgmtd.map(\.id) == [1, 2] && a.mgmtd[1].address == "[::1]:9002" && a.meta?.map(\.address) == ["db.local:9010"])
        let b = try ServerConfig.Cluster.locate(" meta=10@127.0.0.1:9010;mgmtd=1@127.0.0.1:9001 ")
        #expect(b.mgmtd.map(\.id) == [1] && b.meta?.map(\.id) == [10])
    }

    /// Each mistake is refused with a message naming it.
    @Test(arguments: [
        ("", "empty"),
        ("mgmtd=1@127.0.0.1:9001", "meta: name at least one metadata server"),
        ("meta=10@127.0.0.1:9010", "mgmtd: name at least one cluster manager"),
        ("mgmtd=0@127.0.0.1:9001;meta=10@h:1", "positive node id"),
        ("mgmtd=one@127.0.0.1:9001;meta=10@h:1", "ID@HOST:PORT"),
        ("mgmtd=1@127.0.0.1;meta=10@h:1", "host:port"),
        ("mgmtd=1@127.0.0.1:99999;meta=10@h:1", "port in 0...65535"),
        ("storage=1@h:1;mgmtd=1@h:1;meta=2@h:2", "unknown role 'storage'"),
        ("/no/such/cluster.yaml", "no such file or directory"),
    ])
    func mistakesAreNamed(text: String, message: String) {
        do {
            _ = try ServerConfig.Cluster.locate(text)
            Issue.record("'\(text)' was accepted")
        } catch {
            #expect(error.description.contains(message), "\(error.description)")
        }
    }

    @Test func aFileOrTheDirectoryHoldingItIsRead() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cistern-locate-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("cluster.yaml")
        try "mgmtd: [{ id: 1, address: \"127.0.0.1:9001\" }]\nmeta: [{ id: 10, address: \"127.0.0.1:9010\" }]\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(try ServerConfig.Cluster.locate(file.path).meta?.first?.id == 10)
        #expect(try ServerConfig.Cluster.locate(dir.path).mgmtd.first?.address == "127.0.0.1:9001")
        try "mgmtd: [{ id: 1, adress: \"127.0.0.1:9001\" }]\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try ServerConfig.Cluster.locate(dir.path) }
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        do {
            _ = try ServerConfig.Cluster.locate(empty.path)
            Issue.record("a directory without cluster.yaml was accepted")
        } catch {
            #expect(error.description.contains("cistern up --data-dir"), "\(error.description)")
        }
    }
}
