/// What one replica does with a write of chunk version `u` (CRAQ as in 3FS). The head
/// assigns `u` above every version it has committed or staged, while it holds the
/// chunk's lock, so along the chain a replica normally sees `u == committed + 1`.
/// Retries, resends and a head skipping a version it staged but could not settle make
/// other cases happen; each has one safe answer. Chain writes always carry the whole
/// chunk (the head merges a partial write into the newest bytes it holds), so a replica that
/// missed a version is made whole by the next one.
public enum ReplicaWriteRule {
    public enum Decision: Sendable, Equatable {
        /// Store the data as the pending version `u`, then forward (or commit at the tail).
        case stage
        /// This version, with these bytes, is already pending here (a resend): do not
        /// store it again; forward (or commit at the tail) as for a fresh write.
        case alreadyStaged
        /// This version, or a later one, is already committed here: acknowledge.
        case alreadyCommitted
        /// A full-chunk replace (resync, or forwarding to a syncing successor):
        /// overwrite whatever is here, committed, and drop any pending version.
        case replace
        /// A newer version is already pending here: this is a late copy of an older
        /// attempt; refuse it (the newer one decides).
        case superseded(pending: UInt64, got: UInt64)
    }

    /// The decision for a write of version `u` with checksum `checksum` at a replica
    /// holding `meta`. A pending `u` with other bytes (left by a failed attempt the
    /// head then retried with new data) is overwritten, never mistaken for a resend.
    public static func decide(_ meta: ChunkMeta?, version u: UInt64, checksum: UInt32, fullReplace: Bool) -> Decision {
        let committed = meta?.committed?.version ?? 0
        if fullReplace { return u <= committed ? .alreadyCommitted : .replace }
        if u <= committed { return .alreadyCommitted }
        if let pending = meta?.pending {
            if pending.version == u, pending.checksum == checksum { return .alreadyStaged }
            if pending.version > u { return .superseded(pending: pending.version, got: u) }
        }
        return .stage
    }

    /// What the head does with a client's retry of a write whose earlier attempt
    /// staged version `d` here and could not settle it (its forward failed): `d` may
    /// be committed downstream and already read, so the retry must neither lose it
    /// nor apply it a second time after a later write.
    public enum RetryDecision: Sendable, Equatable {
        /// `d` is still pending here with these bytes: send it on again as `d`.
        case resend(ChunkVersion)
        /// A later write was staged over `d` and is pending: the retried write took
        /// effect before it. Send the pending version on (settling both), then answer
        /// the retry as written at `d`. Writing it again as a new version would put
        /// the older value back over the later write, which may be acknowledged.
        case settleLater(ChunkVersion)
        /// `d` or a later version is committed here: the write took effect; answer.
        case answered
        /// `d` is gone from here (never committed, nothing newer pending): write anew.
        case writeAnew
    }

    public static func retry(_ meta: ChunkMeta?, inDoubt d: UInt64, checksum: UInt32) -> RetryDecision {
        if let pending = meta?.pending {
            if pending.version == d, pending.checksum == checksum { return .resend(pending) }
            if pending.version > d { return .settleLater(pending) }
        }
        if meta?.pending?.version != d, (meta?.committed?.version ?? 0) >= d { return .answered }
        return .writeAnew
    }

    /// The version the head assigns to the next write of a chunk. The head holds the
    /// chunk's lock, so a pending version here is left by an attempt that failed after
    /// staging: its successors may have committed it (readers may have seen it), so
    /// the next write goes above it rather than reusing its number with other bytes,
    /// which would leave two replicas with one version and different contents.
    public static func nextVersion(_ meta: ChunkMeta?) -> UInt64 {
        max(meta?.committed?.version ?? 0, meta?.pending?.version ?? 0) + 1
    }

    /// What a read sees: the committed version when nothing is pending; when a write
    /// is in flight, readers are told to retry (3FS does not ask the tail).
    public enum ReadDecision: Sendable, Equatable {
        case serve(ChunkVersion)
        case notCommitted(committed: UInt64?, pending: UInt64)
        case notFound
    }

    public static func read(_ meta: ChunkMeta?) -> ReadDecision {
        guard let meta else { return .notFound }
        if let pending = meta.pending { return .notCommitted(committed: meta.committed?.version, pending: pending.version) }
        guard let committed = meta.committed else { return .notFound }
        return .serve(committed)
    }
}
