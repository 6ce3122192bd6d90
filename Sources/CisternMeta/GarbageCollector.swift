import CisternCore
import CisternWire

/// Deletes a removed file's chunks from storage.
public protocol ChunkRemover: Sendable {
    /// Removes chunks `range` of `inode` from every live replica of the chains in
    /// `layout`. Removing a missing chunk succeeds. Throws when a replica could not be
    /// reached (the file is tried again later).
    func removeChunks(of inode: InodeID, layout: Layout, range: Range<UInt64>) async throws
}

extension ChunkRemover {
    /// Removes chunks `0..<count` (a whole removed file's).
    public func removeChunks(of inode: InodeID, layout: Layout, count: UInt64) async throws {
        try await removeChunks(of: inode, layout: layout, range: 0..<count)
    }
}

extension MetaService {
    /// Files removed at least `delayNanoseconds` ago whose chunks are collected in one
    /// pass, at most.
    public static let garbageBatchMax = 64

    /// One pass of garbage collection over the first `batch` removed files: for
    /// those removed at least `delayNanoseconds` ago, delete their chunks, then drop
    /// their entries. Safe to run on several servers at once and after a crash
    /// (deletion is idempotent and an entry goes only after its chunks). Returns how
    /// many files were collected. Servers run this through `MetaMaintenance`, which
    /// also resumes where the last pass stopped.
    @discardableResult
    public func collectGarbage(using remover: any ChunkRemover, delayNanoseconds: UInt64, batch: Int = MetaService.garbageBatchMax) async throws -> Int {
        try await collectGarbagePage(using: remover, delayNanoseconds: delayNanoseconds, after: nil, limit: min(batch, Self.garbageBatchMax)).0
    }
}
