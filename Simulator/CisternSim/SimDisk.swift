import CisternCore

/// The `Disk` of a simulated process, over its node's `SimDiskStore`. Operations take
/// effect when submitted (readers see them at once, as with a page cache) and
/// complete after a sampled latency; only fsync makes them survive a machine crash.
/// Handles die with the process.
public final class SimDisk: Disk, @unchecked Sendable {
    unowned let process: SimProcess
    private var open: [UInt64: String] = [:]
    private var nextHandle: UInt64 = 0

    init(process: SimProcess) { self.process = process }

    private var store: SimDiskStore { process.node.diskStore }

    private func alive() async {
        if process.status == .dead {
            await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
        }
    }

    private func wait(_ nanoseconds: UInt64) async {
        try? await process.runtime.sleep(nanoseconds: nanoseconds)
        await alive()
    }

    public func open(_ path: String, create: Bool) async throws(DiskError) -> DiskFile {
        try DiskPath.validate(path)
        await wait(store.sampleLatency())
        if store.files[path] == nil {
            guard create else { throw .notFound(path: path) }
            store.files[path] = SimDiskStore.File()
        }
        nextHandle += 1
        open[nextHandle] = path
        return DiskFile(id: nextHandle, path: path)
    }

    public func close(_ file: DiskFile) async { open[file.id] = nil }

    public func remove(_ path: String) async throws(DiskError) {
        try DiskPath.validate(path)
        await wait(store.sampleLatency())
        guard store.files.removeValue(forKey: path) != nil else { throw .notFound(path: path) }
        for id in open.keys.sorted() where open[id] == path { open[id] = nil }
    }

    public func list() async throws(DiskError) -> [String] {
        await wait(store.sampleLatency())
        return store.fileNames
    }

    public func space() async throws(DiskError) -> DiskSpace {
        let used = store.usedBytes
        return DiskSpace(totalBytes: store.config.capacityBytes, freeBytes: store.config.capacityBytes &- min(used, store.config.capacityBytes))
    }

    public func size(_ file: DiskFile) async throws(DiskError) -> UInt64 {
        let f = try resolve(file)
        return UInt64(f.data.count)
    }

    private func resolve(_ file: DiskFile) throws(DiskError) -> SimDiskStore.File {
        guard let path = open[file.id], path == file.path, let f = store.files[path] else { throw .badHandle(file) }
        return f
    }

    public func submit(_ ops: [DiskOp]) async -> [Result<DiskCompletion, DiskError>] {
        await alive()
        if ops.count > DiskLimits.batchOpsMax {
            return ops.map { _ in .failure(.tooLarge(what: "batch", bytes: ops.count, limitBytes: DiskLimits.batchOpsMax)) }
        }
        var results: [Result<DiskCompletion, DiskError>] = []
        results.reserveCapacity(ops.count)
        var latency: UInt64 = 0
        for op in ops {
            latency = max(latency, store.sampleLatency())
            results.append(apply(op))
        }
        // A batch runs its operations in parallel: it completes after the slowest.
        await wait(latency &+ UInt64(ops.count) * 1_000)
        return results
    }

    private func apply(_ op: DiskOp) -> Result<DiskCompletion, DiskError> {
        let world = process.world
        do {
            switch op {
            case .read(let file, let offset, let length):
                let f = try resolve(file)
                guard length >= 0, length <= DiskLimits.ioBytesMax else {
                    throw DiskError.tooLarge(what: "read", bytes: length, limitBytes: DiskLimits.ioBytesMax)
                }
                try injectError(file.path, "read")
                let start = Int(min(offset, UInt64(f.data.count)))
                let end = min(start + length, f.data.count)
                world.trace.record(.diskOp, at: world.nowNanoseconds, 1, offset, UInt64(end - start))
                return .success(.read(Array(f.data[start..<end])))
            case .write(let file, let offset, let bytes):
                let f = try resolve(file)
                guard bytes.count <= DiskLimits.ioBytesMax else {
                    throw DiskError.tooLarge(what: "write", bytes: bytes.count, limitBytes: DiskLimits.ioBytesMax)
                }
                try injectError(file.path, "write")
                try reserve(f, path: file.path, upTo: offset + UInt64(bytes.count))
                SimDiskStore.apply(.write(offset: offset, bytes: bytes), to: &f.data)
                f.unsynced.append(.write(offset: offset, bytes: bytes))
                world.trace.record(.diskOp, at: world.nowNanoseconds, 2, offset, StableHash.fnv1a64(bytes: bytes))
                return .success(.done)
            case .fsync(let file):
                let f = try resolve(file)
                try injectError(file.path, "fsync")
                f.durable = f.data
                f.unsynced.removeAll()
                world.trace.record(.diskOp, at: world.nowNanoseconds, 3)
                return .success(.done)
            case .fallocate(let file, let offset, let length):
                let f = try resolve(file)
                try reserve(f, path: file.path, upTo: offset + length)
                f.allocatedBytes = max(f.allocatedBytes, offset + length)
                world.trace.record(.diskOp, at: world.nowNanoseconds, 4, offset, length)
                return .success(.done)
            case .truncate(let file, let length):
                let f = try resolve(file)
                try injectError(file.path, "truncate")
                try reserve(f, path: file.path, upTo: length)
                SimDiskStore.apply(.truncate(length: length), to: &f.data)
                f.unsynced.append(.truncate(length: length))
                if f.allocatedBytes > length { f.allocatedBytes = length }
                world.trace.record(.diskOp, at: world.nowNanoseconds, 5, length)
                return .success(.done)
            }
        } catch let error as DiskError {
            return .failure(error)
        } catch {
            return .failure(.ioError(path: "?", detail: "\(error)"))
        }
    }

    private func injectError(_ path: String, _ what: String) throws(DiskError) {
        if store.config.errorProbability > 0, store.rng.chance(store.config.errorProbability) {
            process.world.trace.note(.diskFault, at: process.world.nowNanoseconds, "\(process.node.name): injected EIO on \(what) of \(path)")
            throw .ioError(path: path, detail: "injected I/O error on \(what)")
        }
    }

    private func reserve(_ f: SimDiskStore.File, path: String, upTo end: UInt64) throws(DiskError) {
        let current = max(UInt64(f.data.count), f.allocatedBytes)
        guard end > current else { return }
        let used = store.usedBytes
        let needed = end - current
        if used + needed > store.config.capacityBytes {
            throw .noSpace(path: path, neededBytes: needed, freeBytes: store.config.capacityBytes &- min(used, store.config.capacityBytes))
        }
    }
}
