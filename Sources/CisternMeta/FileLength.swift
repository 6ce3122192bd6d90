import CisternCore
import CisternRouting

/// Finds how long a file really is from its chunks, when no client can say (it
/// crashed with the file open, or closed it without reporting).
public protocol ChunkLengthProbe: Sendable {
    /// The committed length of `chunk` on `chain`, or nil when it does not exist.
    func length(of chunk: ChunkID, chain: ChainID) async throws -> Int?
}

extension MetaService {
    /// Most chunks looked at past the recorded length in one reconciliation.
    public static let lengthProbeChunksMax: UInt64 = 1 << 16

    /// Sets `id`'s length from storage: starting at the chunk holding the recorded
    /// end, it looks for the last chunk that exists and adds its length. The length
    /// only grows (a smaller answer from a lagging replica never shrinks a file).
    @discardableResult
    public func reconcileLength(_ id: InodeID, using probe: any ChunkLengthProbe) async throws -> Inode? {
        let file = try await read { try await $0.inode(id) }
        guard let file, let layout = file.layout else { return file }
        let chunkBytes = UInt64(max(layout.chunkBytes, 1))
        var k = file.length / chunkBytes
        var found: UInt64?
        while k < file.length / chunkBytes + Self.lengthProbeChunksMax {
            guard let chain = layout.chain(ofChunk: k), let n = try await probe.length(of: ChunkID(inode: id.rawValue, index: k), chain: chain) else { break }
            found = k * chunkBytes + UInt64(n)
            k += 1
        }
        guard let found else { return file }
        return try await mutate { try await $0.sync(id, length: found) }
    }
}
