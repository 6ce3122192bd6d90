import CisternAuth
import CisternCore
import CoreMetrics
import CisternRouting
import CisternWire
import Logging

/// Why a call to the cluster manager failed.
public enum MgmtdClientError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No replica answered as primary within the attempt budget.
    case noPrimary(attempts: Int, lastError: String)
    case refused(String)
    case malformedReply(String)

    public var description: String {
        switch self {
        case .noPrimary(let n, let e):
            return "no cluster manager primary answered after \(n) attempts (last error: \(e)); check that a majority of mgmtd replicas and the KV store are up"
        case .refused(let why): return "the cluster manager refused: \(why)"
        case .malformedReply(let d): return "malformed reply from the cluster manager: \(d)"
        }
    }
}

/// How every node talks to the cluster manager: finds the primary (following
/// `notPrimary` answers, trying the other replicas after a failure), keeps a routing
/// cache refreshed by version, sends heartbeats, and pulls new routing when the
/// primary pushes a hint. Replicas are reached by identity through the resolver, so
/// a replica that changes IP is found again.
public actor MgmtdClient {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    public nonisolated let node: NodeID
    public let role: NodeRole
    public let name: String
    let runtime: any Runtime
    let transport: any Transport
    let replicas: [NodeID]
    weak var observer: (any RoutingObserver)?
    let log: Logger

    /// Calls per request before giving up (each a different replica or the named
    /// primary), and the waits after each full round of replicas without a primary.
    public var retry = RetryPolicy(attemptsMax: 12, firstDelayNanoseconds: 20_000_000, delayNanosecondsMax: 1_000_000_000)
    public var attemptsMax: Int {
        get { retry.attemptsMax }
        set { retry.attemptsMax = newValue }
    }
    public var callTimeoutNanoseconds: UInt64 = 500_000_000
    private var primary: NodeID?
    private var cursor = 0
    private var sequence: UInt64 = 0
    private let bootID: UInt64
    public private(set) var routing: RoutingInfo?
    /// Where this node can be reached, sent with every heartbeat so routing tells
    /// everyone (production; the simulator finds nodes through its name service).
    public private(set) var advertisedAddresses: [String] = []
    /// Heartbeat metrics (swift-metrics; no-ops unless a backend is bootstrapped).
    private let heartbeatsSent = Counter(label: "cistern_heartbeats_sent_total")
    private let heartbeatsFailed = Counter(label: "cistern_heartbeats_failed_total")
    public func advertise(_ addresses: [String]) { advertisedAddresses = addresses }
    private var refreshing = false

    /// The service capability requests carry (servers and administrators on a
    /// cluster with a key; nil otherwise).
    public nonisolated let serviceTrailer: AuthTrailer?

    public init(node: NodeID, role: NodeRole, name: String, runtime: any Runtime, transport: any Transport, replicas: [NodeID], observer: (any RoutingObserver)? = nil,
                service: Capability? = nil) {
        precondition(!replicas.isEmpty, "a mgmtd client needs at least one cluster manager replica")
        self.serviceTrailer = service.map { AuthTrailer(capabilities: [$0]) }
        self.node = node
        self.role = role
        self.name = name
        self.runtime = runtime
        self.transport = transport
        self.replicas = replicas
        self.observer = observer
        self.log = runtime.logger("mgmtd.client")
        var rng = runtime.random("mgmtd.client.boot")
        self.bootID = rng.next()
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Sends `request` to the primary, wherever it is.
    public func call(_ request: MgmtdRequest) async throws(MgmtdClientError) -> MgmtdReply {
        var message = request.message()
        if let t = serviceTrailer, request.needsService { message.header = t.appended(to: message.header) }
        var lastError = "none"
        for attempt in retry.attempts {
            let target = primary ?? replicas[cursor % replicas.count]
            do {
                // Fault point: the call times out (the reply was lost or late).
                if runtime.faultPoint("mgmtd.client.call.timeout") {
                    try await runtime.sleep(nanoseconds: callTimeoutNanoseconds)
                    throw TransportError.timeout(node: target, nanoseconds: callTimeoutNanoseconds)
                }
                let response = try await transport.call(target, service: mgmtdService, message, timeoutNanoseconds: callTimeoutNanoseconds)
                let reply: MgmtdReply
                do {
                    reply = try MgmtdReply(wireBytes: response.header)
                } catch {
                    throw MgmtdClientError.malformedReply("\(error)")
                }
                switch reply {
                case .notPrimary(let named):
                    lastError = "\(target) is not the primary"
                    if let named, named != target {
                        primary = named
                        continue
                    }
                    primary = nil
                    cursor += 1
                case .refused(let why):
                    throw MgmtdClientError.refused(why)
                default:
                    primary = target
                    return reply
                }
            } catch let e as MgmtdClientError {
                throw e
            } catch {
                lastError = "\(target): \(error)"
                primary = nil
                cursor += 1
            }
            // A full round of replicas without a primary: back off before the next.
            if (attempt + 1) % replicas.count == 0 {
                await retry.wait(beforeAttempt: (attempt + 1) / replicas.count, on: runtime)
            }
        }
        throw .noPrimary(attempts: attemptsMax, lastError: lastError)
    }

    /// Pulls routing if it changed. Returns whether a newer version was accepted.
    /// Versions never go backwards: an older answer (from a replica that lost its
    /// lease, say) is ignored.
    @discardableResult
    public func refreshRouting() async -> Bool {
        let known = routing?.version ?? 0
        guard let reply = try? await call(.getRouting(knownVersion: known)) else { return false }
        guard case .routing(let r) = reply, r.version > (routing?.version ?? 0) else { return false }
        routing = r
        observer?.accepted(r, node: node, session: bootID, at: runtime.nowNanoseconds())
        return true
    }

    /// Sends one heartbeat with `targets`; pulls routing if the reply names a newer version.
    public func heartbeat(targets: [TargetReport]) async throws(MgmtdClientError) {
        sequence += 1
        heartbeatsSent.increment()
        let reply: MgmtdReply
        do {
            reply = try await call(.heartbeat(Heartbeat(node: node, role: role, name: name, sequence: sequence, targets: targets, bootID: bootID, addresses: advertisedAddresses)))
        } catch {
            heartbeatsFailed.increment()
            throw error
        }
        if case .ok(let version) = reply, version > (routing?.version ?? 0) {
            await refreshRouting()
        }
    }

    /// Serves the primary's "routing changed" hints on `transport`.
    public func serveHints() async {
        await transport.serve(routingHintService) { [weak self] request in
            let hint = try RoutingHint(wireBytes: request.message.header)
            await self?.hinted(hint.version)
            return Message(method: 0, header: [])
        }
    }

    private func hinted(_ version: UInt64) {
        guard version > (routing?.version ?? 0), !refreshing else { return }
        refreshing = true
        runtime.spawn("mgmtd.client.refresh") { [self] in
            await self.refreshRouting()
            await self.doneRefreshing()
        }
    }

    private func doneRefreshing() { refreshing = false }
}
