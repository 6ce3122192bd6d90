import CIBVerbs
import CisternCore
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An opened RDMA device (libibverbs): its context, one protection domain, one
/// completion queue with its event channel, and a thread that reaps completions.
///
/// Promises:
/// - `open` either returns a device whose port is ACTIVE or throws an `RDMAError`
///   naming the verbs call that failed and its errno text; whatever it created before
///   the failure is released. It never crashes on a C result.
/// - Every work request posted through the device's queue pairs completes, with the
///   adapter's status, or with `.shutdown` when the device is closed first.
/// - Verbs objects are released in dependency order: a queue pair or buffer keeps the
///   device alive, and the device destroys its completion queue, channel, protection
///   domain and context only when the last of them is gone.
///
/// Call `close()` when done with a device that made queue pairs: the completion
/// thread (started with the first queue pair) holds the device until then. A device
/// that only registered buffers, or none, is released when dropped.
///
/// libibverbs' calls on these objects are thread-safe, and the pointers never change
/// after `open`; that is why the class is `@unchecked Sendable`.
public final class RDMADevice: RDMAFabric, @unchecked Sendable {
    /// The device's name (for example "mlx5_0").
    public let name: String
    /// The port used (1-based).
    public let port: UInt8
    /// The port's local identifier (0 on RoCE).
    public let lid: UInt16
    /// The GID used for global routes (from `gidIndex`).
    public let gid: RDMAGID
    /// The port's active MTU.
    public let pathMTU: RDMAPathMTU
    /// "InfiniBand" or "Ethernet" (RoCE).
    public let linkLayer: String
    let gidIndex: UInt8
    let readDepth: UInt8
    let usesGlobalRoute: Bool

    let context: UnsafeMutablePointer<ibv_context>
    let protectionDomain: UnsafeMutablePointer<ibv_pd>
    let channel: UnsafeMutablePointer<ibv_comp_channel>
    let completionQueue: UnsafeMutablePointer<ibv_cq>

    /// Work requests each queue pair may have outstanding.
    static let sendQueueDepth: UInt32 = 128
    /// Completion queue entries: room for many queue pairs' outstanding work.
    static let completionQueueDepth: Int32 = 4096

    private struct State {
        var waiters: [UInt64: CheckedContinuation<Result<Void, RDMAError>, Never>] = [:]
        var operations: [UInt64: String] = [:]
        var nextWorkRequestID: UInt64 = 1
        var isClosed = false
        var regions = MemoryRegionTable()
    }
    private let state = Mutex(State())
    private let stopPolling = Atomic<Bool>(false)
    /// The completion thread, started with the first queue pair (a device that only
    /// probes never starts one): its pool and the future of its loop.
    private let poller = Mutex<(pool: NIOThreadPool, loop: EventLoopFuture<Void>)?>(nil)

    var portInfo: RDMAPortInfo { RDMAPortInfo(lid: lid, gid: gid, pathMTU: pathMTU, readDepth: readDepth) }

    /// Opens device `name` (the first device when nil), checks that `port` is ACTIVE,
    /// reads GID table entry `gidIndex`, and creates the protection domain and
    /// completion queue. Throws `.verbs` naming the failing call (for example
    /// "ibv_get_device_list" with ENOSYS on a host without RDMA), `.noSuchDevice` when no
    /// device has that name, `.portNotActive`, or `.invalidArgument` for a GID index
    /// out of range.
    public static func open(name: String? = nil, port: UInt8 = 1, gidIndex: Int = 0) throws(RDMAError) -> RDMADevice {
        guard let gidSlot = UInt8(exactly: gidIndex) else {
            throw .invalidArgument("GID index \(gidIndex) is outside 0...255")
        }
        guard port >= 1 else { throw .invalidArgument("port 0: ports are numbered from 1") }
        var count: Int32 = 0
        errno = 0
        guard let list = ibv_get_device_list(&count) else { throw .verbsFromErrno("ibv_get_device_list") }
        defer { ibv_free_device_list(list) }
        var names: [String] = []
        var chosen: (device: UnsafeMutablePointer<ibv_device>, name: String)?
        for index in 0..<Int(max(count, 0)) {
            guard let device = list[index] else { break }
            let deviceName = ibv_get_device_name(device).map { String(cString: $0) } ?? "device\(index)"
            names.append(deviceName)
            if chosen == nil, name == nil || name == deviceName { chosen = (device, deviceName) }
        }
        guard let chosen else {
            throw .noSuchDevice(name: name ?? "(any)", available: names)
        }
        errno = 0
        guard let context = ibv_open_device(chosen.device) else { throw .verbsFromErrno("ibv_open_device(\(chosen.name))") }
        var cleanup: [() -> Void] = [{ _ = ibv_close_device(context) }]
        func fail(_ error: RDMAError) -> RDMAError {
            for step in cleanup.reversed() { step() }
            return error
        }

        var portAttributes = ibv_port_attr()
        let portResult = cistern_ibv_query_port(context, port, &portAttributes)
        guard portResult == 0 else {
            throw fail(.verbs("ibv_query_port(\(chosen.name), port \(port))", portResult > 0 ? portResult : (errno != 0 ? errno : EINVAL)))
        }
        guard portAttributes.state == IBV_PORT_ACTIVE else {
            let stateText = ibv_port_state_str(portAttributes.state).map { String(cString: $0) } ?? "state \(portAttributes.state.rawValue)"
            throw fail(.portNotActive(device: chosen.name, port: port, state: stateText))
        }
        let ethernet = Int(portAttributes.link_layer) == Int(IBV_LINK_LAYER_ETHERNET)
        var gidBytes = [UInt8](repeating: 0, count: 16)
        let gidResult = gidBytes.withUnsafeMutableBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return EINVAL }
            return cistern_query_gid(context, port, Int32(gidSlot), base)
        }
        guard gidResult == 0 else {
            throw fail(.verbs("ibv_query_gid(\(chosen.name), port \(port), index \(gidSlot))", gidResult))
        }
        let gid = RDMAGID(bytes: gidBytes) ?? .zero
        if ethernet, gid.isZero {
            throw fail(.invalidArgument("GID index \(gidSlot) of \(chosen.name) port \(port) is empty; RoCE needs a GID (see `show_gids`)"))
        }
        guard let mtu = RDMAPathMTU(rawValue: UInt8(clamping: portAttributes.active_mtu.rawValue)) else {
            throw fail(.invalidArgument("port \(port) of \(chosen.name) reports MTU code \(portAttributes.active_mtu.rawValue)"))
        }

        var deviceAttributes = ibv_device_attr()
        let deviceResult = ibv_query_device(context, &deviceAttributes)
        guard deviceResult == 0 else {
            throw fail(.verbs("ibv_query_device(\(chosen.name))", deviceResult > 0 ? deviceResult : (errno != 0 ? errno : EINVAL)))
        }
        let depth = UInt8(clamping: max(1, min(16, Int(deviceAttributes.max_qp_rd_atom), Int(deviceAttributes.max_qp_init_rd_atom))))

        errno = 0
        guard let pd = ibv_alloc_pd(context) else { throw fail(.verbsFromErrno("ibv_alloc_pd")) }
        cleanup.append { _ = ibv_dealloc_pd(pd) }
        errno = 0
        guard let channel = ibv_create_comp_channel(context) else { throw fail(.verbsFromErrno("ibv_create_comp_channel")) }
        cleanup.append { _ = ibv_destroy_comp_channel(channel) }
        errno = 0
        guard let cq = ibv_create_cq(context, completionQueueDepth, nil, channel, 0) else {
            throw fail(.verbsFromErrno("ibv_create_cq"))
        }
        cleanup.append { _ = ibv_destroy_cq(cq) }
        let notify = cistern_ibv_req_notify_cq(cq, 0)
        guard notify == 0 else { throw fail(.verbs("ibv_req_notify_cq", notify)) }

        let device = RDMADevice(
            name: chosen.name, port: port, lid: portAttributes.lid, gid: gid, pathMTU: mtu,
            linkLayer: ethernet ? "Ethernet" : "InfiniBand", gidIndex: gidSlot, readDepth: depth, usesGlobalRoute: ethernet,
            context: context, protectionDomain: pd, channel: channel, completionQueue: cq)
        return device
    }

    private init(
        name: String, port: UInt8, lid: UInt16, gid: RDMAGID, pathMTU: RDMAPathMTU, linkLayer: String, gidIndex: UInt8,
        readDepth: UInt8, usesGlobalRoute: Bool, context: UnsafeMutablePointer<ibv_context>,
        protectionDomain: UnsafeMutablePointer<ibv_pd>, channel: UnsafeMutablePointer<ibv_comp_channel>,
        completionQueue: UnsafeMutablePointer<ibv_cq>
    ) {
        self.name = name
        self.port = port
        self.lid = lid
        self.gid = gid
        self.pathMTU = pathMTU
        self.linkLayer = linkLayer
        self.gidIndex = gidIndex
        self.readDepth = readDepth
        self.usesGlobalRoute = usesGlobalRoute
        self.context = context
        self.protectionDomain = protectionDomain
        self.channel = channel
        self.completionQueue = completionQueue
    }

    deinit {
        // Queue pairs and buffers hold the device, and a running completion thread
        // holds it too, so neither is left here.
        _ = ibv_destroy_cq(completionQueue)
        _ = ibv_destroy_comp_channel(channel)
        _ = ibv_dealloc_pd(protectionDomain)
        _ = ibv_close_device(context)
    }

    /// Fails work requests still outstanding with `.shutdown`, refuses new ones, and
    /// stops the completion thread. The verbs objects are released once the queue
    /// pairs and buffers made from this device are gone.
    public func close() async {
        let waiters: [CheckedContinuation<Result<Void, RDMAError>, Never>] = state.withLock { s in
            s.isClosed = true
            let all = Array(s.waiters.values)
            s.waiters = [:]
            s.operations = [:]
            return all
        }
        for waiter in waiters { waiter.resume(returning: .failure(.shutdown)) }
        let running = poller.withLock { p in
            stopPolling.store(true, ordering: .releasing)
            let r = p
            p = nil
            return r
        }
        if let running {
            try? await running.loop.get()
            try? await running.pool.shutdownGracefully()
        }
    }

    // MARK: Buffers

    func registerBuffer(bytes: Int) throws(RDMAError) -> any RDMARegisteredBuffer {
        try VerbsBuffer(device: self, bytes: bytes)
    }

    /// Records a new registration; fails if it collides with one already recorded.
    func recordRegion(_ region: MemoryRegion) throws(RDMAError) {
        let result: Result<Void, MemoryRegionError> = state.withLock { s in
            do throws(MemoryRegionError) {
                try s.regions.insert(region)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        if case .failure(let error) = result { throw .memoryRegion(error) }
    }

    func forgetRegion(at address: UInt64) {
        state.withLock { s in _ = try? s.regions.remove(address: address) }
    }

    /// The registered region holding a local range (its lkey goes into the work request).
    func localRegion(address: UInt64, length: UInt64) throws(RDMAError) -> MemoryRegion {
        let result: Result<MemoryRegion, MemoryRegionError> = state.withLock { s in
            do throws(MemoryRegionError) {
                return .success(try s.regions.region(covering: address, length: length))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let region): return region
        case .failure(let error): throw .memoryRegion(error)
        }
    }

    // MARK: Queue pairs

    func makeQueuePair(packetSequenceNumber: UInt32) throws(RDMAError) -> any RDMAQueuePairHandle {
        try startPollerIfNeeded()
        return try VerbsQueuePair(device: self, packetSequenceNumber: packetSequenceNumber & QueuePairInfo.twentyFourBitMax)
    }

    /// Registers a waiter for a work request about to be posted and returns its id, or
    /// nil (after resuming it with `.shutdown`) when the device is closed.
    func addWaiter(_ waiter: CheckedContinuation<Result<Void, RDMAError>, Never>, operation: String) -> UInt64? {
        let id: UInt64? = state.withLock { s in
            guard !s.isClosed else { return nil }
            let id = s.nextWorkRequestID
            s.nextWorkRequestID &+= 1
            s.waiters[id] = waiter
            s.operations[id] = operation
            return id
        }
        if id == nil { waiter.resume(returning: .failure(.shutdown)) }
        return id
    }

    /// Resumes the waiter of work request `id` (if still waiting) with `result`.
    func finish(_ id: UInt64, _ result: Result<Void, RDMAError>) {
        let waiter = state.withLock { s in
            s.operations[id] = nil
            return s.waiters.removeValue(forKey: id)
        }
        waiter?.resume(returning: result)
    }

    // MARK: Completions

    /// Starts the completion thread unless it runs already; refuses after `close()`.
    private func startPollerIfNeeded() throws(RDMAError) {
        let closed = state.withLock { $0.isClosed }
        guard !closed else { throw .shutdown }
        poller.withLock { p in
            guard p == nil, !stopPolling.load(ordering: .acquiring) else { return }
            let pool = NIOThreadPool(numberOfThreads: 1)
            pool.start()
            let loop = pool.runIfActive(eventLoop: MultiThreadedEventLoopGroup.singleton.next()) { [self] in
                pollLoop()
            }
            p = (pool, loop)
        }
    }

    /// Reaps completions until `close()`: drains the queue, re-arms notification,
    /// drains again (closing the race with a completion that arrived in between), then
    /// waits up to 50 ms for the channel's event.
    private func pollLoop() {
        let batch = 32
        var completions = [ibv_wc](repeating: ibv_wc(), count: batch)
        let fd = cistern_comp_channel_fd(channel)
        while !stopPolling.load(ordering: .acquiring) {
            if drain(&completions) > 0 { continue }
            if cistern_ibv_req_notify_cq(completionQueue, 0) != 0 {
                usleep(1000)
                continue
            }
            if drain(&completions) > 0 { continue }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 50) > 0 else { continue }
            var eventQueue: UnsafeMutablePointer<ibv_cq>?
            var eventContext: UnsafeMutableRawPointer?
            if ibv_get_cq_event(channel, &eventQueue, &eventContext) == 0 {
                ibv_ack_cq_events(eventQueue ?? completionQueue, 1)
            }
        }
    }

    /// Polls the completion queue once and resumes each completed request's waiter;
    /// returns how many completions it found.
    private func drain(_ completions: inout [ibv_wc]) -> Int {
        let found = completions.withUnsafeMutableBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return 0 }
            return cistern_ibv_poll_cq(completionQueue, Int32(buffer.count), base)
        }
        guard found > 0 else {
            if found < 0 { usleep(1000) }
            return 0
        }
        for index in 0..<Int(found) {
            let completion = completions[index]
            if completion.status == IBV_WC_SUCCESS {
                finish(completion.wr_id, .success(()))
            } else {
                let operation = state.withLock { $0.operations[completion.wr_id] } ?? "work request"
                let status = ibv_wc_status_str(completion.status).map { String(cString: $0) } ?? "status \(completion.status.rawValue)"
                finish(
                    completion.wr_id,
                    .failure(.completionFailed(operation: operation, status: status, vendorError: completion.vendor_err)))
            }
        }
        return Int(found)
    }
}

/// A page-aligned buffer registered with a device for local access and remote READ
/// and WRITE. Deregistered and freed when dropped.
final class VerbsBuffer: RDMARegisteredBuffer, @unchecked Sendable {
    let device: RDMADevice
    let base: UnsafeMutableRawPointer
    let count: Int
    let region: MemoryRegion
    private let memoryRegion: UnsafeMutablePointer<ibv_mr>

    init(device: RDMADevice, bytes: Int) throws(RDMAError) {
        guard bytes > 0 else { throw .invalidArgument("a registered buffer needs at least 1 byte, not \(bytes)") }
        var raw: UnsafeMutableRawPointer?
        let allocated = posix_memalign(&raw, 4096, bytes)
        guard allocated == 0, let memory = raw else { throw .verbs("posix_memalign(\(bytes) bytes)", allocated != 0 ? allocated : ENOMEM) }
        // Peers may READ any of it: zero it so they never see stale heap contents.
        memset(memory, 0, bytes)
        let access = Int32(bitPattern: IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)
        errno = 0
        guard let mr = cistern_ibv_reg_mr(device.protectionDomain, memory, bytes, access) else {
            let error = RDMAError.verbsFromErrno("ibv_reg_mr(\(bytes) bytes)")
            free(memory)
            throw error
        }
        let region = MemoryRegion(
            address: UInt64(UInt(bitPattern: memory)), length: UInt64(bytes), lkey: cistern_mr_lkey(mr), rkey: cistern_mr_rkey(mr))
        do throws(RDMAError) {
            try device.recordRegion(region)
        } catch {
            _ = ibv_dereg_mr(mr)
            free(memory)
            throw error
        }
        self.device = device
        self.base = memory
        self.count = bytes
        self.region = region
        self.memoryRegion = mr
    }

    deinit {
        device.forgetRegion(at: region.address)
        _ = ibv_dereg_mr(memoryRegion)
        free(base)
    }
}

/// A reliable-connected queue pair on a device. Destroyed when dropped; work in
/// flight keeps it alive (the posting call holds it).
final class VerbsQueuePair: RDMAQueuePairHandle, @unchecked Sendable {
    let device: RDMADevice
    let number: UInt32
    let packetSequenceNumber: UInt32
    private let queuePair: UnsafeMutablePointer<ibv_qp>
    private let slots = InFlightLimiter<Int>(perKeyMax: Int(RDMADevice.sendQueueDepth))
    private let connectedState = Mutex<Bool?>(false)  // false: not yet; true: connected; nil: closed

    init(device: RDMADevice, packetSequenceNumber: UInt32) throws(RDMAError) {
        errno = 0
        guard let qp = cistern_create_rc_qp(device.protectionDomain, device.completionQueue, RDMADevice.sendQueueDepth, 1) else {
            throw .verbsFromErrno("ibv_create_qp")
        }
        self.device = device
        self.queuePair = qp
        self.number = cistern_qp_num(qp)
        self.packetSequenceNumber = packetSequenceNumber
    }

    deinit {
        _ = ibv_destroy_qp(queuePair)
    }

    func connect(to remote: QueuePairInfo) throws(RDMAError) {
        let access = Int32(bitPattern: IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)
        let toInit = cistern_qp_to_init(queuePair, device.port, access)
        guard toInit == 0 else { throw .verbs("ibv_modify_qp(RESET->INIT)", toInit) }
        let mtu = min(device.pathMTU, remote.pathMTU)
        let global = device.usesGlobalRoute || remote.lid == 0
        let depth = min(device.readDepth, remote.readDepth)
        let toRTR = remote.gid.bytes.withUnsafeBufferPointer { gid -> Int32 in
            guard let base = gid.baseAddress else { return EINVAL }
            return cistern_qp_to_rtr(
                queuePair, device.port, Int32(mtu.rawValue), remote.queuePairNumber, remote.packetSequenceNumber,
                remote.lid, base, global ? 1 : 0, device.gidIndex, device.readDepth)
        }
        guard toRTR == 0 else { throw .verbs("ibv_modify_qp(INIT->RTR)", toRTR) }
        let toRTS = cistern_qp_to_rts(queuePair, packetSequenceNumber, depth)
        guard toRTS == 0 else { throw .verbs("ibv_modify_qp(RTR->RTS)", toRTS) }
        connectedState.withLock { if $0 == false { $0 = true } }
    }

    func post(
        _ operation: RDMAOperation, local: any RDMARegisteredBuffer, localOffset: Int, length: Int,
        remoteAddress: UInt64, rkey: UInt32
    ) async throws(RDMAError) {
        guard length > 0, let length32 = UInt32(exactly: length) else {
            throw .invalidArgument("\(operation.name) of \(length) bytes: one work request moves 1 byte to 4 GiB")
        }
        guard localOffset >= 0, localOffset <= local.count - length else {
            throw .invalidArgument("\(operation.name) of \(length) bytes at offset \(localOffset) of a \(local.count)-byte buffer")
        }
        let address = UInt64(UInt(bitPattern: local.base)) + UInt64(localOffset)
        let lkey = try device.localRegion(address: address, length: UInt64(length)).lkey
        switch connectedState.withLock({ $0 }) {
        case nil: throw .notConnected("the queue pair was closed")
        case false?: throw .notConnected("connect(to:) has not completed")
        case true?: break
        }
        await slots.acquire(0)
        defer { slots.release(0) }
        let device = self.device
        let queuePair = self.queuePair
        let result: Result<Void, RDMAError> = await withCheckedContinuation { waiter in
            guard let id = device.addWaiter(waiter, operation: operation.name) else { return }
            let posted = cistern_post_rdma(
                queuePair, id, operation == .read ? 1 : 0, address, length32, lkey, remoteAddress, rkey)
            if posted != 0 { device.finish(id, .failure(.verbs("ibv_post_send(\(operation.name))", posted))) }
        }
        // `local` must outlive the transfer: it is used until the completion above.
        withExtendedLifetime(local) {}
        try result.get()
    }

    func close() {
        let wasOpen = connectedState.withLock { s -> Bool in
            let open = s != nil
            s = nil
            return open
        }
        if wasOpen { _ = cistern_qp_to_error(queuePair) }
    }
}
