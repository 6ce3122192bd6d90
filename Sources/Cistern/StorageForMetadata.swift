import CisternCore
import CisternMgmtd
import CisternRouting
import CisternStorage
import CisternWire

/// Deletes chunks on the storage nodes: every replica that receives writes (SERVING
/// or SYNCING) is asked to remove each chunk; replicas that are down are left to
/// resync, which removes chunks their predecessor no longer has.
public struct StorageChunkRemover: ChunkRemover {
    let transport: any Transport
    let mgmtd: MgmtdClient
    let timeoutNanoseconds: UInt64

    public init(transport: any Transport, mgmtd: MgmtdClient, timeoutNanoseconds: UInt64 = 1_000_000_000) {
        self.transport = transport
        self.mgmtd = mgmtd
        self.timeoutNanoseconds = timeoutNanoseconds
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public func removeChunks(of inode: InodeID, layout: Layout, count: UInt64) async throws {
        await mgmtd.refreshRouting()
        guard let routing = await mgmtd.routing else { throw Failure(description: "no routing information yet") }
        for k in 0..<count {
            guard let chainID = layout.chain(ofChunk: k), let chain = routing.chain(chainID) else { continue }
            let chunk = ChunkID(inode: inode.rawValue, index: k)
            for member in chain.writeTargets {
                guard let node = routing.target(member.target)?.node else { continue }
                let request = StorageRequest.removeChunk(target: member.target, chainVersion: chain.version, chunk: chunk).message()
                let response = try await transport.call(node, service: storageService, request, timeoutNanoseconds: timeoutNanoseconds)
                let reply = try StorageReply(wireBytes: response.header)
                guard case .done = reply else { throw Failure(description: "\(member.target) did not remove \(chunk): \(reply)") }
            }
        }
    }
}
