import CisternCore
import CisternWire

/// Deletes a removed file's chunks from storage.
public protocol ChunkRemover: Sendable {
    /// Removes chunks `0..<count` of `inode` from every live replica of the chains in
    /// `layout`. Removing a missing chunk succeeds. Throws when a replica could not be
    /// reached (the file is tried again later).
    func removeChunks(of inode: InodeID, layout: Layout, count: UInt64) async throws
}

extension MetaService {
    /// Files removed at least `delayNanoseconds` ago whose chunks are collected in one
    /// pass, at most.
    public static let garbageBatchMax = 64

    /// One pass of garbage collection: for up to `batch` files removed at least
    /// `delayNanoseconds` ago, delete their chunks, then drop their entries. Safe to
    /// run on several servers at once and after a crash (deletion is idempotent and
    /// an entry goes only after its chunks). Returns how many files were collected.
    @discardableResult
    public func collectGarbage(using remover: any ChunkRemover, delayNanoseconds: UInt64, batch: Int = MetaService.garbageBatchMax) async throws -> Int {
        let now = runtime.nowNanoseconds()
        let due: [Inode] = try await read { ns in
            try await ns.tx.getRange(.prefix(MetaKeys.garbagePrefix), limit: min(batch, Self.garbageBatchMax), reverse: false)
                .map { try Inode(wireBytes: $0.value) }
                .filter { now >= $0.mtimeNanoseconds &+ delayNanoseconds }
        }
        var collected = 0
        for file in due {
            guard let layout = file.layout else { continue }
            let chunkBytes = UInt64(max(layout.chunkBytes, 1))
            let count = (file.length + chunkBytes - 1) / chunkBytes
            do {
                try await remover.removeChunks(of: file.id, layout: layout, count: count)
            } catch {
                continue
            }
            _ = try await mutate { ns in
                try await ns.tx.clear(MetaKeys.garbage(file.id))
                return nil
            }
            collected += 1
        }
        return collected
    }

    /// Runs `collectGarbage` every `intervalNanoseconds` for as long as the server lives.
    public func startGarbageCollector(using remover: any ChunkRemover, intervalNanoseconds: UInt64 = 5_000_000_000, delayNanoseconds: UInt64 = 30_000_000_000) {
        runtime.spawn("meta.gc") { [self] in
            while true {
                try? await self.runtime.sleep(nanoseconds: intervalNanoseconds)
                _ = try? await self.collectGarbage(using: remover, delayNanoseconds: delayNanoseconds)
            }
        }
    }
}
