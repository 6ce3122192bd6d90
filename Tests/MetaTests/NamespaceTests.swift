import CisternCore
import CisternMeta
import CisternNIO
import CisternRouting
import CisternSQLite
import Testing

let policy = LayoutPolicy(table: 1, tableVersion: 1, chains: (1...8).map { ChainID($0) }, chunkBytes: 1 << 20, stripe: 3)

func service() throws -> MetaService {
    let kv = try SQLiteKV()
    return MetaService(kv: kv, runtime: ProductionRuntime(nodeName: "meta-test", baseSeed: 1, logLevel: .critical), policy: policy)
}

func error<T>(_ body: () async throws -> T) async -> MetaError? {
    do {
        _ = try await body()
        return nil
    } catch {
        return error as? MetaError
    }
}

@Suite struct NamespaceTests {
    @Test func createStatListAndLayouts() async throws {
        let m = try service()
        _ = try await m.mkdir("/a/b/c", parents: true)
        let f = try await m.create("/a/b/file")
        #expect(f.type == .file)
        #expect(f.layout?.chains.count == 3)
        #expect(Set(f.layout!.chains).count == 3)
        #expect(try await m.stat("/a/b/file") == f)
        #expect(try await m.list("/a/b").map(\.name) == ["c", "file"])
        #expect(await error { try await m.create("/a/b/file") } == .exists("/a/b/file"))
        #expect(await error { try await m.stat("/a/x") } == .notFound("/a/x"))
        #expect(await error { try await m.create("/a/b/file/z") } == .notADirectory("/a/b/file"))
        #expect(await error { try await m.stat("relative") } == .invalidPath("relative", reason: "paths are absolute (start with /)"))
        // Placement is a fixed function of the inode: the same on every build.
        #expect(ChainAllocator.chains(table: policy.chains, start: 2, stripe: 3, seed: 42) == ChainAllocator.chains(table: policy.chains, start: 2, stripe: 3, seed: 42))
    }

    @Test func pagedListing() async throws {
        let m = try service()
        _ = try await m.mkdir("/d")
        func name(_ i: Int) -> String { i < 10 ? "f0\(i)" : "f\(i)" }
        for i in 0..<25 { _ = try await m.create("/d/\(name(i))") }
        let first = try await m.list("/d", limit: 10)
        let second = try await m.list("/d", after: first.last!.name, limit: 10)
        let third = try await m.list("/d", after: second.last!.name, limit: 10)
        #expect(first.count == 10 && second.count == 10 && third.count == 5)
        let names: [String] = (first + second + third).map(\.name)
        let expected: [String] = (0..<25).map(name)
        #expect(names == expected)
    }

    @Test func removeAndRecursiveRemove() async throws {
        let m = try service()
        _ = try await m.mkdir("/a/b", parents: true)
        _ = try await m.create("/a/b/f")
        #expect(await error { try await m.remove("/a") } == .notEmpty("/a"))
        try await m.remove("/a", recursive: true)
        #expect(await error { try await m.stat("/a") } == .notFound("/a"))
        let (inodes, garbage) = try await m.read { try await $0.statfs() }
        #expect(inodes == 1, "only the root is left")
        #expect(garbage == 1, "the removed file's chunks wait for garbage collection")
    }

    @Test func renameIsAtomicAndNeverMakesACycle() async throws {
        let m = try service()
        _ = try await m.mkdir("/a/b/c", parents: true)
        _ = try await m.mkdir("/x")
        #expect(await error { try await m.rename("/a", "/a/b/c/a") } == .cycle(from: "/a", to: "/a/b/c/a"))
        #expect(await error { try await m.rename("/a", "/a/z") } == .cycle(from: "/a", to: "/a/z"))
        try await m.rename("/a/b", "/x/b")
        #expect(try await m.list("/x/b").map(\.name) == ["c"])
        #expect(try await m.list("/a").isEmpty)
        #expect(try await m.stat("/x/b").parent == (try await m.stat("/x")).id)
        // Replacing a file; refusing to replace a non-empty directory.
        _ = try await m.create("/f1")
        let f2 = try await m.create("/f2")
        try await m.rename("/f2", "/f1")
        #expect(try await m.stat("/f1").id == f2.id)
        #expect(await error { try await m.rename("/a", "/x") } == .notEmpty("/x"))
    }

    @Test func hardLinksSymlinksAttributesAndSessions() async throws {
        let m = try service()
        let f = try await m.create("/f")
        let linked = try await m.mutate { try await $0.link("/f", "/g") }
        #expect(linked?.nlink == 2)
        try await m.remove("/f")
        #expect(try await m.stat("/g").nlink == 1)
        let s = try await m.mutate { try await $0.symlink("/s", target: "/g") }
        #expect(s?.symlinkTarget == "/g")
        let opened = try await m.mutate { try await $0.open("/g", write: true, session: 7) }
        #expect(opened?.id == f.id)
        let closed = try await m.mutate { try await $0.close(f.id, session: 7, length: 12_345) }
        #expect(closed?.length == 12_345)
        let synced = try await m.mutate { try await $0.sync(f.id, length: 100) }
        #expect(synced?.length == 12_345, "a smaller length report never shrinks a file")
        let truncated = try await m.mutate { try await $0.truncate("/g", length: 10) }
        #expect(truncated?.length == 10)
        let attrs = try await m.mutate { try await $0.setattr("/g", mode: 0o600) }
        #expect(attrs?.mode == 0o600)
        let stats = try await m.read { try await $0.batchStat([f.id, InodeID(999)]) }
        #expect(stats.count == 2 && stats[0]?.id == f.id && stats[1] == nil)
    }
}
