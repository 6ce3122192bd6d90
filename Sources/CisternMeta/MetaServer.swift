import CisternAuth
import CisternCore
import CisternWire

extension MetaService {
    /// Serves `metaService` requests on `transport`. Passing store failures (conflicts
    /// beyond the retry budget, outages, unknown outcomes) answer `unavailable`: the
    /// client retries the same request, which its identity makes safe. A full store
    /// (`noSpace`) or a lasting store failure (`store`) is refused at once.
    ///
    /// With authentication (`auth`), each request's token names its caller (a refusal
    /// `permissionDenied` otherwise), the caller must be allowed every path the
    /// operation names (`MetaAccess`), its retried requests are remembered under a
    /// client number scoped to its tenant, and a reply that returns a file carries a
    /// capability for the file's chunks.
    public func serve(on transport: any Transport) async {
        let auth = self.auth
        await transport.serve(metaService) { [self] request in
            guard let auth else {
                let parsed = try MetaRequest(request.message)
                return Message(method: 0, header: await self.execute(parsed).wireBytes())
            }
            var (parsed, trailer) = try MetaRequest.decode(request.message)
            let caller: Caller
            do throws(AuthError) {
                caller = try await auth.authenticator.caller(token: trailer?.token)
            } catch .unavailable(let why) {
                return Message(method: 0, header: MetaReply.unavailable(why).wireBytes())
            } catch {
                return Message(method: 0, header: MetaReply.refused(.permissionDenied, "\(error)").wireBytes())
            }
            if let why = MetaAccess.refusal(parsed.op, caller: caller, presented: trailer?.capabilities ?? [], key: auth.key) {
                return Message(method: 0, header: MetaReply.refused(.permissionDenied, "\(AuthError.forbidden(why))").wireBytes())
            }
            // Request records are per tenant; keep-alives name the client's own sessions.
            if parsed.op != .keepAlive { parsed.client = Access.scopedClient(parsed.client, tenant: caller.tenant) }
            let reply = await self.execute(parsed)
            trailer = nil
            if case .inode(let i?) = reply, i.type == .file {
                trailer = AuthTrailer(capabilities: [auth.key.mint(inode: i.id.rawValue, rights: .readWrite)])
            }
            return Message(method: 0, header: trailer.map { $0.appended(to: reply.wireBytes()) } ?? reply.wireBytes())
        }
    }

    /// Runs one request.
    public func execute(_ r: MetaRequest) async -> MetaReply {
        let policy = self.policy
        do {
            switch r.op {
            case .stat(let p): return .inode(try await read { try await $0.stat(p) })
            case .batchStat(let ids): return .inodes(try await read { try await $0.batchStat(ids) })
            case .list(let p, let after, let limit): return .entries(try await read { try await $0.list(p, after: after, limit: limit) })
            case .statfs:
                let (i, g) = try await read { try await $0.statfs() }
                return .statfs(inodes: i, garbage: g)
            case .create(let p, let mode, let ex, let owner):
                guard !policy.chains.isEmpty else { return .unavailable("no chain table yet to place \(p) on: create chains first (cistern admin create-chains)") }
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.create(p, mode: mode, policy: policy, exclusive: ex, owner: owner ?? .root) })
            case .mkdir(let p, let parents, let mode, let owner):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.mkdir(p, mode: mode ?? 0o755, parents: parents, owner: owner ?? .root) })
            case .symlink(let p, let t, let owner):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.symlink(p, target: t, owner: owner ?? .root) })
            case .link(let a, let b):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.link(a, b) })
            case .remove(let p, let recursive):
                return .inode(try await mutate(client: r.client, request: r.request) { ns in
                    try await ns.remove(p, recursive: recursive)
                    return nil
                })
            case .rename(let a, let b):
                return .inode(try await mutate(client: r.client, request: r.request) { ns in
                    try await ns.rename(a, b)
                    return nil
                })
            case .open(let p, let write, let s):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.open(p, write: write, session: s) })
            case .close(let id, let s, let l):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.close(id, session: s, length: l) })
            case .sync(let id, let l):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.sync(id, length: l) })
            case .setattr(let p, let change):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.setattr(p, change) })
            case .keepAlive:
                try await keepAlive(client: r.client)
                return .inode(nil)
            case .truncate(let p, let l):
                return .inode(try await truncate(p, length: l, client: r.client, request: r.request))
            }
        } catch let e as MetaError {
            return .refused(MetaErrorCode(e), "\(e)")
        } catch let e as KVError {
            // A full store or one that fails for good is said at once: retrying the
            // request for minutes would only hide it. Conflicts, outages and unknown
            // outcomes are retried by the client.
            switch e {
            case .noSpace(let d):
                let refusal = MetaError.noSpace(d)
                return .refused(MetaErrorCode(refusal), "\(refusal)")
            case .storage, .tooLarge, .transactionClosed:
                return .refused(.store, "\(MetaError.store("\(e)"))")
            case .conflict, .unavailable, .maybeCommitted, .retriesExhausted:
                return .unavailable("\(e)")
            }
        } catch {
            return .unavailable("\(error)")
        }
    }
}

/// Which metadata operations a caller may run (pure): the admin everything; another
/// tenant only operations whose every path is in its tree (`Access.mayUse(path:)`),
/// and operations addressed by inode only with a valid capability for each inode
/// (which it got when it opened or created the file).
public enum MetaAccess {
    /// Why `caller` may not run `op` (nil: it may).
    public static func refusal(_ op: MetaOp, caller: Caller, presented: [Capability], key: CapabilityKey) -> String? {
        if caller.isAdmin { return nil }
        let paths: [String]
        switch op {
        case .stat(let p), .create(let p, _, _, _), .mkdir(let p, _, _, _), .symlink(let p, _, _), .remove(let p, _), .list(let p, _, _),
             .open(let p, _, _), .setattr(let p, _), .truncate(let p, _):
            paths = [p]
        case .link(let a, let b), .rename(let a, let b):
            paths = [a, b]
        case .statfs, .keepAlive:
            paths = []
        case .batchStat(let ids):
            return key.check(needed: .read, inodes: ids.map(\.rawValue), presented: presented)
        case .close(let id, _, _), .sync(let id, _):
            return key.check(needed: .write, inodes: [id.rawValue], presented: presented)
        }
        for p in paths where !Access.mayUse(path: p, tenant: caller.tenant) {
            return "\(caller) may use only \(Access.root(of: caller.tenant)) and what is under it, not '\(p.prefix(200))'"
        }
        return nil
    }
}
