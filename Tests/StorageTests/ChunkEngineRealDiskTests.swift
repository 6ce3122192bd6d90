import CisternCore
import CisternNIO
import CisternStorage
import CisternURing
import Foundation
import Testing
import CisternRouting

@Suite struct ChunkEngineRealDiskTests {
    @Test func chunksSurviveReopeningOnTheMachinesBestDisk() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cistern-chunks-\(UInt64.random(in: 0...UInt64.max))").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runtime = ProductionRuntime(nodeName: "chunk-test", baseSeed: 1, logLevel: .critical)
        let (disk, _) = try DiskFactory.makeBest(root: root)
        let ids = (0..<20).map { ChunkID(inode: 5, index: UInt64($0)) }
        var written: [ChunkID: [UInt8]] = [:]
        do {
            let engine = try await ChunkEngine.open(disk: disk, runtime: runtime)
            for (i, id) in ids.enumerated() {
                let data = pattern(1_000 + i * 30_011, UInt64(i))
                try await engine.stage(id, data: data, version: 1, chainVersion: 1)
                try await engine.commit(id, version: 1)
                written[id] = data
            }
            try await engine.remove(ids[3])
            written[ids[3]] = nil
        }
        let (again, kind) = try DiskFactory.makeBest(root: root)
        let reopened = try await ChunkEngine.open(disk: again, runtime: runtime)
        for (id, data) in written.sorted(by: { $0.key < $1.key }) {
            #expect(try await reopened.read(id).data == data, "\(id) on \(kind)")
        }
        #expect(await reopened.meta(ids[3]) == nil)
        #expect(await reopened.allMeta().count == 19)
    }
}
