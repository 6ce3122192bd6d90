import CisternCore
import NIOCore
import Synchronization

/// One TCP connection from this node to a remote node, carrying many concurrent
/// calls told apart by request id. Calls wait for their response, their deadline or
/// the connection's end, whichever comes first; a response that arrives after its
/// call timed out finds no waiter and is dropped.
///
/// A connection that stays silent is abandoned: when a call times out and not a byte
/// arrived on the connection since that call was sent, the connection sends a probe
/// (a request for `probeService`, which no node serves: any live peer answers at once
/// with "no such service", even while its handlers are busy). If nothing answers the
/// probe within `probeTimeoutNanoseconds`, the peer is taken to be gone (its address
/// moved or its host died without a reset, so TCP would retransmit for many minutes)
/// and the connection closes; the next call connects again, resolving the node's
/// names afresh. A slow handler on a live peer costs a probe, never the connection.
final class TCPOutboundConnection: Sendable {
    let node: NodeID
    let address: NodeAddress
    /// This node (the probe's source).
    let localNode: NodeID
    /// The service id of liveness probes (reserved: never served).
    static let probeService = ServiceID(UInt16.max)
    static let probeTimeoutNanoseconds: UInt64 = 1_000_000_000
    private let onClose: @Sendable (TCPOutboundConnection) -> Void
    private let state = Mutex(State())

    private struct Pending {
        let resume: @Sendable (Result<Message, TransportError>) -> Void
        var timer: Scheduled<Void>?
        /// `State.reads` when the call was sent.
        let readsAtSend: UInt64
    }

    private struct State {
        var channel: (any Channel)?
        var pending: [UInt64: Pending] = [:]
        /// Set once the connection is closed: why, as calls on it will be told.
        var closed: TransportError?
        /// Socket reads so far (any bytes, whole frames or not).
        var reads: UInt64 = 0
        /// Whether a liveness probe is out.
        var probing = false
        var probes: UInt64 = 0
    }

    /// `onClose` runs once, when the connection closes for any reason.
    init(node: NodeID, address: NodeAddress, localNode: NodeID, onClose: @escaping @Sendable (TCPOutboundConnection) -> Void) {
        self.node = node
        self.address = address
        self.localNode = localNode
        self.onClose = onClose
    }

    /// Whether new calls may use this connection.
    var isOpen: Bool { state.withLock { $0.channel != nil && $0.closed == nil } }

    /// Binds the connected channel; false (and the channel closed) when the
    /// connection already ended.
    func attach(_ channel: any Channel) -> Bool {
        let ok = state.withLock { s in
            guard s.closed == nil else { return false }
            s.channel = channel
            return true
        }
        if !ok { channel.close(promise: nil) }
        return ok
    }

    /// Sends `frame` and waits for the response with its request id until `deadline`.
    func call(_ frame: TCPFrame, deadline: NIODeadline, timeoutNanoseconds: UInt64) async -> Result<Message, TransportError> {
        await withCheckedContinuation { continuation in
            send(frame, deadline: deadline, timeoutNanoseconds: timeoutNanoseconds) { continuation.resume(returning: $0) }
        }
    }

    /// Sends `frame`; `resume` gets the response, the timeout or the failure, once.
    private func send(_ frame: TCPFrame, deadline: NIODeadline, timeoutNanoseconds: UInt64,
                      resume: @escaping @Sendable (Result<Message, TransportError>) -> Void) {
        let id = frame.requestID
        let admitted: Result<any Channel, TransportError> = state.withLock { s in
            if let reason = s.closed { return .failure(reason) }
            guard let channel = s.channel else {
                return .failure(.unreachable(node: self.node, reason: "connection to \(self.address) is not established"))
            }
            guard s.pending.count < TCPTransportLimits.inFlightCallsPerConnectionMax else {
                return .failure(
                    .unreachable(
                        node: self.node,
                        reason: "\(TCPTransportLimits.inFlightCallsPerConnectionMax) calls already in flight to \(self.address); the node is overloaded or the caller must limit its concurrency"
                    ))
            }
            s.pending[id] = Pending(resume: resume, timer: nil, readsAtSend: s.reads)
            return .success(channel)
        }
        let channel: any Channel
        switch admitted {
        case .failure(let error):
            resume(.failure(error))
            return
        case .success(let c):
            channel = c
        }
        let node = self.node
        let timer = channel.eventLoop.scheduleTask(deadline: deadline) { [self] in
            timedOut(id, nanoseconds: timeoutNanoseconds)
        }
        let keep = state.withLock { s in
            guard s.pending[id] != nil else { return false }
            s.pending[id]!.timer = timer
            return true
        }
        if !keep { timer.cancel() }
        let address = self.address
        channel.writeAndFlush(frame.encodedBuffer()).whenFailure { [self] error in
            _ = complete(id, .failure(.unreachable(node: node, reason: "cannot send to \(address): \(error)")))
        }
    }

    /// Counts a socket read: the peer is alive.
    func noteRead() {
        state.withLock { $0.reads &+= 1 }
    }

    /// Ends call `id` with `.timeout`; if nothing at all arrived on the connection
    /// since the call was sent, probes the peer (see the type's comment).
    private func timedOut(_ id: UInt64, nanoseconds: UInt64) {
        let probe: UInt64? = state.withLock { s in
            guard let pending = s.pending[id] else { return nil }
            guard pending.readsAtSend == s.reads, !s.probing, s.closed == nil else { return 0 }
            s.probing = true
            s.probes &+= 1
            return s.probes
        }
        guard let probe else { return }
        complete(id, .failure(.timeout(node: node, nanoseconds: nanoseconds)))
        guard probe > 0 else { return }
        let frame = TCPFrame(kind: .request, requestID: (1 << 63) | probe, source: localNode, destination: node,
                             service: Self.probeService, method: 0, header: [])
        let wait = Self.probeTimeoutNanoseconds
        send(frame, deadline: NIODeadline.now() + .nanoseconds(Int64(wait)), timeoutNanoseconds: wait) { [self] result in
            state.withLock { $0.probing = false }
            guard case .failure(.timeout) = result else { return }
            close(.unreachable(node: node, reason: "nothing came from \(address) for \(nanoseconds / 1_000_000) ms nor answered a probe within \(wait / 1_000_000) ms: connection abandoned (the node may have moved or died); the next call connects again"))
        }
    }

    /// Ends call `id` with `result`; false when no such call waits (it timed out or failed).
    @discardableResult
    func complete(_ id: UInt64, _ result: Result<Message, TransportError>) -> Bool {
        guard let entry = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return false }
        entry.timer?.cancel()
        entry.resume(result)
        return true
    }

    /// Closes the connection, failing every call on it with `reason`. Later calls
    /// see `reason` too. Only the first close counts.
    func close(_ reason: TransportError) {
        let taken: (channel: (any Channel)?, pending: [Pending])? = state.withLock { s in
            guard s.closed == nil else { return nil }
            s.closed = reason
            let pending = Array(s.pending.values)
            s.pending = [:]
            return (s.channel, pending)
        }
        guard let taken else { return }
        taken.channel?.close(promise: nil)
        for entry in taken.pending {
            entry.timer?.cancel()
            entry.resume(.failure(reason))
        }
        onClose(self)
    }
}
