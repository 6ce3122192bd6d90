import CisternCore
import CisternMeta
import CisternRouting
import CisternStorage

// The rest of the POSIX-shaped file operations (what a FUSE mount maps onto):
// ownership and modes at creation, attribute changes, links, truncation, inode
// lookups and write reports.
extension CisternClient {
    /// The inodes with these ids (nil for those that no longer exist).
    public func inodes(_ ids: [InodeID]) async throws(CisternError) -> [Inode?] {
        guard case .inodes(let l) = try await metaCall(.batchStat(ids)) else { throw .meta(.exhausted(attempts: 1, lastError: "unexpected reply to batchStat")) }
        return l
    }

    /// Creates a file owned by `owner` (exclusive: EEXIST for an existing name).
    public func create(_ path: String, mode: UInt32, exclusive: Bool, owner: Owner) async throws(CisternError) -> Inode {
        guard let i = try await inode(.create(path, mode: mode, exclusive: exclusive, owner: owner)) else { throw Self.unexpected("create") }
        return i
    }

    /// Creates one directory (its parent must exist) with `mode`, owned by `owner`.
    public func mkdir(_ path: String, mode: UInt32, owner: Owner) async throws(CisternError) -> Inode {
        guard let i = try await inode(.mkdir(path, parents: false, mode: mode, owner: owner)) else { throw Self.unexpected("mkdir") }
        return i
    }

    public func symlink(_ path: String, target: String, owner: Owner = .root) async throws(CisternError) -> Inode {
        guard let i = try await inode(.symlink(path, target: target, owner: owner)) else { throw Self.unexpected("symlink") }
        return i
    }

    /// A hard link `newPath` to the file at `existing`; returns the file (one more link).
    public func link(_ existing: String, _ newPath: String) async throws(CisternError) -> Inode {
        guard let i = try await inode(.link(existing, newPath)) else { throw Self.unexpected("link") }
        return i
    }

    public func setattr(_ path: String, _ change: AttributeChange) async throws(CisternError) -> Inode {
        guard let i = try await inode(.setattr(path, change)) else { throw Self.unexpected("setattr") }
        return i
    }

    /// Sets a file's length. Shrinking deletes the chunks past the new end (the
    /// metadata server does) and zeroes the rest of the chunk that holds it, so a
    /// file grown again reads zeros there, as POSIX says.
    public func truncate(_ path: String, length: UInt64) async throws(CisternError) -> Inode {
        let before = try await stat(path)
        guard let after = try await inode(.truncate(path, length: length)) else { throw Self.unexpected("truncate") }
        guard length < before.length, let layout = after.layout, layout.chunkBytes > 0 else { return after }
        let chunkBytes = UInt64(layout.chunkBytes)
        let inChunk = Int(length % chunkBytes)
        guard inChunk > 0, let chain = layout.chain(ofChunk: length / chunkBytes) else { return after }
        let chunk = ChunkID(inode: after.id.rawValue, index: length / chunkBytes)
        let got = try await readChunks([(chunk, chain)], expectedBytes: Int(chunkBytes))
        if let data = got[chunk] ?? nil, data.count > inChunk {
            do throws(StorageClientError) {
                _ = try await storage.write(chunk, chain: chain, offset: inChunk, [UInt8](repeating: 0, count: data.count - inChunk))
            } catch {
                throw .storage(error)
            }
        }
        return after
    }

    /// Tells the metadata servers what a writer did: the file is at least `length`
    /// long and was modified now (fsync and flush of a mount).
    public func sync(_ handle: FileHandle, length: UInt64) async throws(CisternError) -> Inode {
        keep(handle)
        guard let i = try await inode(.sync(handle.inode, length: length)) else { throw Self.unexpected("sync") }
        return i
    }

    /// The namespace's inode count and files awaiting garbage collection.
    public func statfs() async throws(CisternError) -> (inodes: Int, garbage: Int) {
        guard case .statfs(let i, let g) = try await metaCall(.statfs) else { throw Self.unexpected("statfs") }
        return (i, g)
    }

    static func unexpected(_ op: String) -> CisternError {
        .meta(.exhausted(attempts: 1, lastError: "unexpected reply to \(op)"))
    }
}

/// How much a cluster holds: per chain the smallest replica's capacity and the
/// largest replica's use (a chain is as full as its fullest replica), summed.
public struct ClusterCapacity: Sendable, Equatable {
    public var totalBytes: UInt64
    public var usedBytes: UInt64
    public var freeBytes: UInt64 { totalBytes > usedBytes ? totalBytes - usedBytes : 0 }
}

extension CisternClient {
    /// The cluster's capacity from the routing information (zero before any).
    public func capacity() async -> ClusterCapacity {
        guard let r = await mgmtd.routing else { return ClusterCapacity(totalBytes: 0, usedBytes: 0) }
        var byTarget: [TargetID: TargetInfo] = [:]
        for t in r.targets { byTarget[t.id] = t }
        var total: UInt64 = 0
        var used: UInt64 = 0
        for c in r.chains {
            let members = c.targets.compactMap { byTarget[$0.target] }
            total += members.map(\.capacityBytes).min() ?? 0
            used += members.map(\.usedBytes).max() ?? 0
        }
        return ClusterCapacity(totalBytes: total, usedBytes: used)
    }
}
