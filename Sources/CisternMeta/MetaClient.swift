import CisternAuth
import CisternCore
import CisternWire

/// Why a metadata call gave up.
public enum MetaClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case refused(MetaErrorCode, String)
    case exhausted(attempts: Int, lastError: String)
    public var description: String {
        switch self {
        case .refused(_, let text): return text
        case .exhausted(let n, let e): return "no metadata server answered after \(n) attempts (last: \(e)); check the servers and the KV store"
        }
    }
}

/// Talks to the metadata servers: every request carries this client's identity and a
/// fresh request number, and is retried (on another server after a failure) with the
/// same number, so a retried remove or rename is applied once.
public actor MetaClient {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let runtime: any Runtime
    let transport: any Transport
    let servers: [NodeID]
    public let clientID: UInt64
    private var nextRequest: UInt64 = 0
    private var cursor: Int
    /// Attempts per call (rotating servers after errors) and the waits between them.
    public var retry = RetryPolicy(attemptsMax: 200, firstDelayNanoseconds: 10_000_000, delayNanosecondsMax: 500_000_000)
    public var attemptsMax: Int {
        get { retry.attemptsMax }
        set { retry.attemptsMax = newValue }
    }
    public var timeoutNanoseconds: UInt64 = 1_000_000_000
    /// The token every request carries (nil on a cluster without authentication).
    public nonisolated let token: String?
    /// Where capabilities from replies go, and where inode-addressed requests find theirs.
    public nonisolated let wallet: CapabilityWallet?

    public init(runtime: any Runtime, transport: any Transport, servers: [NodeID], clientID: UInt64, token: String? = nil, wallet: CapabilityWallet? = nil) {
        self.token = token
        self.wallet = wallet
        precondition(!servers.isEmpty, "a metadata client needs at least one server")
        self.runtime = runtime
        self.transport = transport
        self.servers = servers
        self.clientID = clientID
        self.cursor = Int(clientID % UInt64(servers.count))
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Runs `op`; refusals (the namespace says no) come back as `.refused`.
    public func call(_ op: MetaOp) async throws(MetaClientError) -> MetaReply {
        nextRequest += 1
        var request = MetaRequest(client: clientID, request: nextRequest, op: op).message()
        if token != nil || wallet != nil {
            let inodes: [UInt64] = switch op {
            case .batchStat(let ids): ids.map(\.rawValue)
            case .close(let id, _, _), .sync(let id, _): [id.rawValue]
            default: []
            }
            request.header = AuthTrailer(token: token, capabilities: wallet?.capabilities(for: inodes) ?? []).appended(to: request.header)
        }
        var last = "no attempt"
        for attempt in retry.attempts {
            await retry.wait(beforeAttempt: attempt, on: runtime)
            let server = servers[cursor % servers.count]
            do {
                let response = try await transport.call(server, service: metaService, request, timeoutNanoseconds: timeoutNanoseconds)
                var r = WireReader(response.header)
                let reply = try MetaReply(from: &r)
                if let trailer = try AuthTrailer.read(after: &r) { wallet?.insert(trailer.capabilities) }
                switch reply {
                case .refused(let code, let text): throw MetaClientError.refused(code, text)
                case .unavailable(let text): last = "\(server): \(text)"
                default: return reply
                }
            } catch let e as MetaClientError {
                throw e
            } catch {
                last = "\(server): \(error)"
                cursor += 1
            }
        }
        throw .exhausted(attempts: attemptsMax, lastError: last)
    }
}
