import CisternRouting
/// Decides what a predecessor sends a returning (SYNCING) successor, from both
/// sides' chunk metadata, following 3FS's rules:
/// - a chunk only here is sent; a chunk only there is removed there;
/// - a chunk written here under a newer chain version is sent;
/// - under the same chain version, it is skipped only when both hold the same
///   committed version with the same length and checksum; otherwise it is sent.
/// Sends are full-chunk replaces of our committed version.
///
/// A successor whose *pending* version equals our committed one is sent the chunk
/// too. Within one chain version a predecessor commits only after its successor
/// did, so that state means the successor lost its commit record (a crash dropped
/// unsynced writes) and no write in flight will ever complete it. Sending is safe
/// when a write is in flight after all: a replica answers a replace at or below its
/// committed version with `alreadyCommitted`.
public enum ResyncPlanner {
    public enum Action: Sendable, Equatable {
        case send(ChunkID)
        case remove(ChunkID)
    }

    public static func plan(local: [ChunkMeta], remote: [ChunkMeta]) -> [Action] {
        var theirs: [ChunkID: ChunkMeta] = [:]
        for m in remote { theirs[m.id] = m }
        var actions: [Action] = []
        var seen: Set<ChunkID> = []
        for mine in local.sorted(by: { $0.id < $1.id }) {
            seen.insert(mine.id)
            guard let committed = mine.committed else { continue }
            guard let other = theirs[mine.id] else {
                actions.append(.send(mine.id))
                continue
            }
            let otherChainVersion = max(other.committed?.chainVersion ?? 0, other.pending?.chainVersion ?? 0)
            if committed.chainVersion <= otherChainVersion, let oc = other.committed,
               oc.version == committed.version, oc.checksum == committed.checksum, oc.length == committed.length {
                continue
            }
            actions.append(.send(mine.id))
        }
        for other in remote.sorted(by: { $0.id < $1.id }) where !seen.contains(other.id) {
            actions.append(.remove(other.id))
        }
        return actions
    }
}
