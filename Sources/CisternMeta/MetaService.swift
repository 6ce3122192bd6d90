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

    public init(kv: any TransactionalKV, runtime: any Runtime, policy: LayoutPolicy) {
        self.kv = kv
        self.runtime = runtime
        self.policy = policy
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    public func setPolicy(_ p: LayoutPolicy) { policy = p }

    /// Runs a read-only operation.
    public func read<T: Sendable>(_ op: @Sendable (Namespace) async throws -> T) async throws -> T {
        let now = runtime.nowNanoseconds()
        return try await kv.transact(runtime: runtime, idempotent: true) { tx in try await op(Namespace(tx, now: now)) }
    }

    /// Runs a mutation. With a request identity it is applied once however often it
    /// is retried: the result (the inode it returns, if any) is recorded with it.
    public func mutate(client: UInt64? = nil, request: UInt64? = nil, _ op: @Sendable (Namespace) async throws -> Inode?) async throws -> Inode? {
        let now = runtime.nowNanoseconds()
        guard let client, let request else {
            return try await kv.transact(runtime: runtime) { tx in try await op(Namespace(tx, now: now)) }
        }
        let key = MetaKeys.idempotency(client, request)
        return try await kv.transact(runtime: runtime, idempotent: true) { tx in
            if let recorded = try await tx.get(key) {
                var r = WireReader(recorded)
                return try r.read(Inode?.self)
            }
            let result = try await op(Namespace(tx, now: now))
            try await tx.set(key, result.wireBytes())
            return result
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

    public func rename(_ from: String, _ to: String, client: UInt64? = nil, request: UInt64? = nil) async throws {
        _ = try await mutate(client: client, request: request) { ns in
            try await ns.rename(from, to)
            return nil
        }
    }
}
