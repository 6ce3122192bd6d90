import CisternAuth
import CisternCore
import CisternWire

/// Talks to the KV cache index on the metadata servers: retries a request on another
/// server after a failure or an `unavailable` answer (every request is safe to
/// repeat), with capped exponential backoff.
public actor KVIndexClient {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let runtime: any Runtime
    let transport: any Transport
    let servers: [NodeID]
    private var cursor: Int
    /// Attempts per call (rotating servers after errors) and the waits between them.
    public var retry = RetryPolicy(attemptsMax: 60, firstDelayNanoseconds: 10_000_000, delayNanosecondsMax: 500_000_000)
    public var attemptsMax: Int {
        get { retry.attemptsMax }
        set { retry.attemptsMax = newValue }
    }
    public var timeoutNanoseconds: UInt64 = 1_000_000_000
    /// The token every request carries (nil on a cluster without authentication).
    public nonisolated let token: String?
    /// Where capabilities from replies (a namespace's data files) go.
    public nonisolated let wallet: CapabilityWallet?

    public init(runtime: any Runtime, transport: any Transport, servers: [NodeID], seed: UInt64, token: String? = nil, wallet: CapabilityWallet? = nil) {
        self.token = token
        self.wallet = wallet
        precondition(!servers.isEmpty, "a KV index client needs at least one metadata server")
        self.runtime = runtime
        self.transport = transport
        self.servers = servers
        self.cursor = Int(seed % UInt64(servers.count))
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Sends `request`; refusals come back as `KVCacheError`, and running out of
    /// attempts as `.unavailable` naming the last error.
    public func call(_ request: KVRequest) async throws(KVCacheError) -> KVReply {
        var message = request.message()
        if let token { message.header = AuthTrailer(token: token).appended(to: message.header) }
        var last = "no attempt"
        for attempt in retry.attempts {
            await retry.wait(beforeAttempt: attempt, on: runtime)
            let server = servers[cursor % servers.count]
            do {
                let response = try await transport.call(server, service: kvIndexService, message, timeoutNanoseconds: timeoutNanoseconds)
                var r = WireReader(response.header)
                let reply = try KVReply(from: &r)
                if let trailer = try AuthTrailer.read(after: &r) { wallet?.insert(trailer.capabilities) }
                switch reply {
                case .refused(let e): throw e
                case .unavailable(let text): last = "\(server): \(text)"
                default: return reply
                }
            } catch let e as KVCacheError {
                throw e
            } catch {
                last = "\(server): \(error)"
                cursor += 1
            }
        }
        throw .unavailable("no metadata server answered after \(attemptsMax) attempts (last: \(last)); check the metadata servers and the KV store")
    }
}
