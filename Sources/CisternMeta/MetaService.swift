import CisternAuth
import CisternCore
import CisternWire

/// A metadata server. It keeps no state of its own: every operation is one
/// serializable transaction on the shared transactional KV (retried on conflicts and
/// outages), so any number of servers can serve one namespace. A mutation that names
/// its request (client, request number) writes an idempotency record in the same
/// transaction, so a retry after an unknown outcome ("maybe committed", a lost reply)
/// returns the first result instead of running again.
public actor MetaService {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let kv: any TransactionalKV
    let runtime: any Runtime
    public var policy: LayoutPolicy
    /// Tenants and capabilities (nil: a cluster without authentication, where every
    /// caller may do everything).
    public nonisolated let auth: AuthSettings?
    /// Deletes chunks past a file's new end when it is truncated (nil: they stay,
    /// and a file grown again over them shows their old bytes).
    let remover: (any ChunkRemover)?

    public init(kv: any TransactionalKV, runtime: any Runtime, policy: LayoutPolicy, auth: AuthSettings? = nil, remover: (any ChunkRemover)? = nil) {
        self.auth = auth
        self.remover = remover
        self.kv = kv
        self.runtime = runtime
        self.policy = policy
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    public func setPolicy(_ p: LayoutPolicy) { policy = p }

    /// Runs a read-only operation.
    public func read<T: Sendable>(_ op: @Sendable (Namespace) async throws -> T) async throws -> T {
        let now = runtime.nowNanoseconds()
        let wall = runtime.wallClockNanoseconds()
        return try await kv.transact(runtime: runtime, idempotent: true) { tx in try await op(Namespace(tx, now: now, wall: wall)) }
    }

    /// What a request's idempotency record holds: its result, or its refusal.
    enum Recorded: Sendable {
        case applied(Inode?)
        case refused(MetaError)

        func bytes() -> [UInt8] {
            var w = WireWriter()
            switch self {
            case .applied(let i):
                w.writeVarint(1)
                w.write(i)
            case .refused(let e):
                w.writeVarint(2)
                w.write(e)
            }
            return w.bytes
        }

        init(_ bytes: [UInt8]) throws(WireError) {
            var r = WireReader(bytes)
            switch try r.readVarint("record kind") {
            case 1: self = .applied(try r.read(Inode?.self))
            case 2: self = .refused(try r.read(MetaError.self))
            case let tag: throw .unknownTag(type: "idempotency record", tag: tag)
            }
        }

        func get() throws -> Inode? {
            switch self {
            case .applied(let i): return i
            case .refused(let e): throw e
            }
        }
    }

    struct Refusal: Error {
        let error: MetaError
    }

    /// Runs a mutation. With a request identity it is applied once however often it
    /// is retried, and every copy of the request gets the same answer: the result,
    /// or the refusal, is recorded with it. (A refusal must be recorded too: a
    /// duplicate still retrying on another server after the client got "refused"
    /// could otherwise succeed later, behind the client's back.)
    public func mutate(client: UInt64? = nil, request: UInt64? = nil, _ op: @Sendable (Namespace) async throws -> Inode?) async throws -> Inode? {
        let now = runtime.nowNanoseconds()
        let wall = runtime.wallClockNanoseconds()
        guard let client, let request else {
            return try await kv.transact(runtime: runtime) { tx in try await op(Namespace(tx, now: now, wall: wall)) }
        }
        let key = MetaKeys.idempotency(client, request)
        do {
            return try await kv.transact(runtime: runtime, idempotent: true) { tx in
                if let bytes = try await tx.get(key) { return try Recorded(bytes).get() }
                do {
                    let result = try await op(Namespace(tx, now: now, wall: wall))
                    try await tx.set(key, Recorded.applied(result).bytes())
                    try await tx.set(MetaKeys.idempotencyByTime(now, client, request), [])
                    return result
                } catch let e as MetaError {
                    // Roll the operation back; the refusal is recorded below.
                    throw Refusal(error: e)
                }
            }
        } catch let refusal as Refusal {
            // A second transaction records the refusal, unless a copy of the request
            // was applied meanwhile: then every copy answers with that result.
            let recorded: Recorded = try await kv.transact(runtime: runtime, idempotent: true) { tx in
                if let bytes = try await tx.get(key) { return try Recorded(bytes) }
                try await tx.set(key, Recorded.refused(refusal.error).bytes())
                try await tx.set(MetaKeys.idempotencyByTime(now, client, request), [])
                return .refused(refusal.error)
            }
            return try recorded.get()
        }
    }

    // MARK: Conveniences (each one transaction)

    public func stat(_ path: String) async throws -> Inode { try await read { try await $0.stat(path) } }

    public func list(_ path: String, after: String? = nil, limit: Int = 1_000) async throws -> [Dentry] {
        try await read { try await $0.list(path, after: after, limit: limit) }
    }

    public func create(_ path: String, client: UInt64? = nil, request: UInt64? = nil) async throws -> Inode {
        let policy = self.policy
        return try await mutate(client: client, request: request) { try await $0.create(path, policy: policy) }!
    }

    public func mkdir(_ path: String, parents: Bool = false, client: UInt64? = nil, request: UInt64? = nil) async throws -> Inode {
        try await mutate(client: client, request: request) { try await $0.mkdir(path, parents: parents) }!
    }

    public func remove(_ path: String, recursive: Bool = false, client: UInt64? = nil, request: UInt64? = nil) async throws {
        _ = try await mutate(client: client, request: request) { ns in
            try await ns.remove(path, recursive: recursive)
            return nil
        }
    }

    /// Sets a file's length. Shrinking deletes the chunks wholly past the new end
    /// first (so growing the file again shows zeros there, not old bytes); the
    /// client zeroes the rest of the chunk that holds the new end. A retry of the
    /// same request deletes nothing more (the length already is the new one).
    public func truncate(_ path: String, length: UInt64, client: UInt64? = nil, request: UInt64? = nil) async throws -> Inode? {
        if let remover {
            let file = try await read { try await $0.resolve(path) }
            if file.type == .file, let layout = file.layout, layout.chunkBytes > 0, length < file.length {
                let chunkBytes = UInt64(layout.chunkBytes)
                let first = (length + chunkBytes - 1) / chunkBytes
                let end = (file.length + chunkBytes - 1) / chunkBytes
                if first < end { try await remover.removeChunks(of: file.id, layout: layout, range: first..<end) }
            }
        }
        return try await mutate(client: client, request: request) { try await $0.truncate(path, length: length) }
    }

    public func rename(_ from: String, _ to: String, client: UInt64? = nil, request: UInt64? = nil) async throws {
        _ = try await mutate(client: client, request: request) { ns in
            try await ns.rename(from, to)
            return nil
        }
    }
}
