import CisternAuth
import CisternCore
import CisternKV
import CisternMeta
import CisternMgmtd
import CisternRouting
import CisternStorage
import CisternWire

// The metadata servers reach storage through two protocols (`ChunkRemover`,
// `ChunkLengthProbe`) so CisternMeta and CisternKV do not depend on the storage
// module; these are the storage-backed implementations, and the usual way to start
// a metadata server with them.

/// Deletes chunks on the storage nodes: every replica that receives writes (SERVING
/// or SYNCING) is asked to remove each chunk; replicas that are down are left to
/// resync, which removes chunks their predecessor no longer has.
public struct StorageChunkRemover: ChunkRemover {
    let transport: any Transport
    let mgmtd: MgmtdClient
    let timeoutNanoseconds: UInt64
    /// The service capability removals carry (nil without authentication).
    let trailer: AuthTrailer?

    public init(transport: any Transport, mgmtd: MgmtdClient, timeoutNanoseconds: UInt64 = 1_000_000_000, key: CapabilityKey? = nil) {
        self.trailer = key.map { AuthTrailer(capabilities: [$0.service]) }
        self.transport = transport
        self.mgmtd = mgmtd
        self.timeoutNanoseconds = timeoutNanoseconds
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public func removeChunks(of inode: InodeID, layout: Layout, range: Range<UInt64>) async throws {
        await mgmtd.refreshRouting()
        guard let routing = await mgmtd.routing else { throw Failure(description: "no routing information yet") }
        for k in range {
            guard let chainID = layout.chain(ofChunk: k), let chain = routing.chain(chainID) else { continue }
            let chunk = ChunkID(inode: inode.rawValue, index: k)
            for member in chain.writeTargets {
                guard let node = routing.target(member.target)?.node else { continue }
                let request = StorageRequest.removeChunk(target: member.target, chainVersion: chain.version, chunk: chunk).message(trailer: trailer)
                let response = try await transport.call(node, service: storageService, request, timeoutNanoseconds: timeoutNanoseconds)
                let reply = try StorageReply(wireBytes: response.header)
                guard case .done = reply else { throw Failure(description: "\(member.target) did not remove \(chunk): \(reply)") }
            }
        }
    }
}

/// Length probes go through a storage client (reads only).
extension StorageClient: ChunkLengthProbe {}

extension MetadataServer {
    /// Starts a metadata server whose garbage collection and length reconciliation
    /// use the storage nodes in `mgmtd`'s routing.
    public static func start(kv: any TransactionalKV, runtime: any Runtime, transport: any Transport, mgmtd: MgmtdClient,
                             chunkBytes: UInt32 = 1 << 20, stripe: Int = 4, heartbeatNanoseconds: UInt64 = 1_000_000_000,
                             maintenance settings: MaintenanceSettings = MaintenanceSettings(), auth: MetadataAuth? = nil) async -> MetadataServer {
        // Length probes only read, so the storage client's write channels (keyed by
        // client id) never collide with a real client's.
        let probe = StorageClient(runtime: runtime, transport: transport, mgmtd: mgmtd, clientID: mgmtd.node.rawValue << 8 | 0xFF,
                                  wallet: auth.map { CapabilityWallet(serviceOf: $0.key) })
        return await start(kv: kv, runtime: runtime, transport: transport, mgmtd: mgmtd,
                           remover: StorageChunkRemover(transport: transport, mgmtd: mgmtd, key: auth?.key), lengthProbe: probe,
                           chunkBytes: chunkBytes, stripe: stripe, heartbeatNanoseconds: heartbeatNanoseconds, maintenance: settings, auth: auth)
    }
}
