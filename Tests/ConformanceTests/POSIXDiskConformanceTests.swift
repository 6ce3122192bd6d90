import CisternConformance
import CisternCore
import CisternNIO
import CisternPOSIX
import Foundation
import Synchronization
import Testing

/// Fresh `POSIXDisk`s, each rooted at its own directory under one temporary directory
/// that `finish()` removes.
final class POSIXDiskHarness: DiskHarness {
    let runtime: any Runtime = ProductionRuntime(nodeName: "posix-disk-test")
    let base: String
    private let disks = Mutex(0)

    init() throws {
        base = FileManager.default.temporaryDirectory.path + "/cistern-posix-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    }

    func makeDisk() async throws -> any Disk {
        let index = disks.withLock { count in
            count += 1
            return count
        }
        return try POSIXDisk(root: "\(base)/disk\(index)")
    }

    func finish() async {
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Runs `body` with the harness and removes the temporary directory afterwards.
    static func with(_ body: (POSIXDiskHarness) async throws -> Void) async throws {
        let harness = try POSIXDiskHarness()
        do {
            try await body(harness)
        } catch {
            await harness.finish()
            throw error
        }
        await harness.finish()
    }
}

@Suite struct POSIXDiskConformanceTests {
    @Test func passesTheDiskConformanceSuite() async throws {
        try await POSIXDiskHarness.with { harness in
            try await DiskConformance.run(harness)
        }
    }

    @Test func createsItsRootAndNestedDirectories() async throws {
        try await POSIXDiskHarness.with { harness in
            let disk = try POSIXDisk(root: harness.base + "/deep/er/root/")
            #expect(disk.root == harness.base + "/deep/er/root")
            let file = try await disk.open("a/b/c", create: true)
            try await disk.write(file, offset: 0, [1, 2, 3])
            await disk.close(file)
            #expect(FileManager.default.fileExists(atPath: harness.base + "/deep/er/root/a/b/c"))
            #expect(try await disk.list() == ["a/b/c"])
        }
    }

    @Test func listsOnlyRegularFiles() async throws {
        try await POSIXDiskHarness.with { harness in
            let disk = try POSIXDisk(root: harness.base + "/list")
            let file = try await disk.open("f", create: true)
            await disk.close(file)
            try FileManager.default.createDirectory(atPath: harness.base + "/list/emptydir", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: harness.base + "/list/link", withDestinationPath: "f")
            #expect(try await disk.list() == ["f"])
        }
    }

    @Test func mapsErrnoToDiskErrors() async throws {
        try await POSIXDiskHarness.with { harness in
            let disk = try POSIXDisk(root: harness.base + "/errors")
            let file = try await disk.open("plain", create: true)
            await disk.close(file)
            // ENOTDIR: a path through a regular file.
            await #expect(throws: DiskError.notFound(path: "plain/x")) { try await disk.open("plain/x", create: false) }
            // A directory is not a file: ioError naming the reason.
            try FileManager.default.createDirectory(atPath: harness.base + "/errors/dir", withIntermediateDirectories: true)
            do {
                _ = try await disk.open("dir", create: false)
                Issue.record("opening a directory should fail")
            } catch let error as DiskError {
                guard case .ioError(let path, let detail) = error else {
                    Issue.record("expected ioError, got \(error)")
                    return
                }
                #expect(path == "dir")
                #expect(detail.contains("errno") || detail.contains("not a regular file"))
            } catch {
                Issue.record("expected a DiskError, got \(error)")
            }
        }
    }

    @Test func aRemovedFileStaysReadableThroughAnOpenHandle() async throws {
        try await POSIXDiskHarness.with { harness in
            let disk = try POSIXDisk(root: harness.base + "/unlinked")
            let file = try await disk.open("f", create: true)
            try await disk.write(file, offset: 0, [5, 6, 7])
            try await disk.remove("f")
            #expect(try await disk.list().isEmpty)
            #expect(try await disk.read(file, offset: 0, length: 3) == [5, 6, 7])
            await disk.close(file)
        }
    }

    @Test func aRootThatIsAFileIsRejected() async throws {
        try await POSIXDiskHarness.with { harness in
            _ = FileManager.default.createFile(atPath: harness.base + "/notadir", contents: Data([1]))
            #expect(throws: DiskError.self) { try POSIXDisk(root: harness.base + "/notadir") }
        }
    }
}
