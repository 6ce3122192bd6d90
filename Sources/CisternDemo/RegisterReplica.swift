import CisternCore
import CisternWire

/// One replica of the demo register (the demo service that gives scenarios meaning
/// until the real services land; it is retired then). It keeps the newest
/// (stamp, value) per key, and acknowledges a write only after it is fsynced to its
/// log, so an acknowledged write survives a crash.
public actor RegisterReplica {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let runtime: any Runtime
    let disk: any Disk
    private var state: [String: RegisterReply] = [:]
    private var log: DiskFile?
    private var logEnd: UInt64 = 0

    public static let logPath = "register.log"

    init(runtime: any Runtime, disk: any Disk) {
        self.runtime = runtime
        self.disk = disk
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Recovers from the disk and starts serving on `transport`.
    public static func boot(runtime: any Runtime, disk: any Disk, transport: any Transport) async throws -> RegisterReplica {
        let replica = RegisterReplica(runtime: runtime, disk: disk)
        try await replica.recover()
        await transport.serve(registerService) { [replica] request in
            try await replica.handle(request.message)
        }
        return replica
    }

    private func recover() async throws {
        let file = try await disk.open(Self.logPath, create: true)
        let size = try await disk.size(file)
        let bytes = try await disk.read(file, offset: 0, length: Int(size))
        let (records, valid) = RegisterLog.recover(bytes)
        for rec in records where rec.stamp > (state[rec.key]?.stamp ?? .zero) {
            state[rec.key] = RegisterReply(stamp: rec.stamp, value: rec.value)
        }
        if valid < bytes.count {
            try await disk.truncate(file, length: UInt64(valid))
            try await disk.fsync(file)
        }
        log = file
        logEnd = UInt64(valid)
    }

    func handle(_ message: Message) async throws -> Message {
        switch try RegisterRequest(message) {
        case .read(let key):
            return reply(key)
        case .write(let key, let stamp, let value):
            if stamp > (state[key]?.stamp ?? .zero) {
                guard let log else { throw DiskError.unavailable(reason: "register log not open") }
                let frame = RegisterLog.frame(.init(key: key, stamp: stamp, value: value))
                let offset = logEnd
                logEnd += UInt64(frame.count)
                let results = await disk.submit([.write(log, offset: offset, bytes: frame), .fsync(log)])
                for case .failure(let error) in results { throw error }
                if stamp > (state[key]?.stamp ?? .zero) {
                    state[key] = RegisterReply(stamp: stamp, value: value)
                }
            }
            return reply(key)
        }
    }

    private func reply(_ key: String) -> Message {
        let r = state[key] ?? RegisterReply(stamp: .zero, value: nil)
        return Message(method: 0, header: r.wireBytes())
    }
}
