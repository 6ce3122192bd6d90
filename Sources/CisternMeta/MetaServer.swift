import CisternCore
import CisternWire

extension MetaService {
    /// Serves `metaService` requests on `transport`. Passing store failures (conflicts
    /// beyond the retry budget, outages, unknown outcomes) answer `unavailable`: the
    /// client retries the same request, which its identity makes safe. A full store
    /// (`noSpace`) or a lasting store failure (`store`) is refused at once.
    public func serve(on transport: any Transport) async {
        await transport.serve(metaService) { [self] request in
            let parsed = try MetaRequest(request.message)
            let reply = await self.execute(parsed)
            return Message(method: 0, header: reply.wireBytes())
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
            case .create(let p, let mode, let ex):
                guard !policy.chains.isEmpty else { return .unavailable("no chain table yet to place \(p) on: create chains first (cistern admin create-chains)") }
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.create(p, mode: mode, policy: policy, exclusive: ex) })
            case .mkdir(let p, let parents):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.mkdir(p, parents: parents) })
            case .symlink(let p, let t):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.symlink(p, target: t) })
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
            case .setattr(let p, let mode):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.setattr(p, mode: mode) })
            case .keepAlive:
                try await keepAlive(client: r.client)
                return .inode(nil)
            case .truncate(let p, let l):
                return .inode(try await mutate(client: r.client, request: r.request) { try await $0.truncate(p, length: l) })
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
