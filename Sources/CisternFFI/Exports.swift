import Cistern
import CisternConnect
import CisternKV

#if canImport(Glibc)
import Glibc
#endif

// The C ABI of include/cistern.h. Each function validates every pointer before use,
// turns each failure into a code plus a thread-local message, and never lets a Swift
// error or trap cross into C for bad input.

/// Runs `body`, turning a thrown `FFIError` into its code and message.
@inline(__always)
func call(_ body: () throws(FFIError) -> Void) -> Int32 {
    do {
        try body()
        return Code.ok
    } catch {
        LastError.set(error.message)
        return error.code
    }
}

func handleID(_ p: OpaquePointer?) -> UInt { p.map { UInt(bitPattern: Int(bitPattern: UnsafeRawPointer($0))) } ?? 0 }

func handlePointer(_ id: UInt) -> OpaquePointer? { OpaquePointer(bitPattern: id) }

/// The keys of a batch call, checked: not NULL, within the batch limit, UTF-8.
func readKeys(_ keys: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int) throws(FFIError) -> [String] {
    // size_t arrives as Int: a huge count (a negative ssize_t cast, say) shows as negative.
    guard count >= 0 else { throw .invalid("count is \(UInt(bitPattern: count)), more than any batch; pass the number of keys (at most \(KVCacheLimits.batchKeysMax))") }
    guard count <= KVCacheLimits.batchKeysMax else {
        throw FFIError(code: Code.tooLarge, message: "a batch of \(count) keys exceeds the limit of \(KVCacheLimits.batchKeysMax); split it")
    }
    if count == 0 { return [] }
    guard let keys else { throw .invalid("keys is NULL but count is \(count)") }
    var out: [String] = []
    out.reserveCapacity(count)
    for i in 0..<count {
        guard let k = keys[i] else { throw .invalid("keys[\(i)] is NULL") }
        guard let s = String(validatingCString: k) else { throw .invalid("keys[\(i)] is not valid UTF-8") }
        out.append(s)
    }
    return out
}

@_cdecl("cistern_abi_version")
public func cistern_abi_version() -> Int32 { 1 }

@_cdecl("cistern_last_error")
public func cistern_last_error() -> UnsafePointer<CChar>? { LastError.get() }

nonisolated(unsafe) let codeNames: [Int32: UnsafeMutablePointer<CChar>] = Code.names.mapValues { strdup($0)! }
nonisolated(unsafe) let unknownCode: UnsafeMutablePointer<CChar> = strdup("CISTERN_E?")!

@_cdecl("cistern_strerror")
public func cistern_strerror(_ code: Int32) -> UnsafePointer<CChar>? {
    UnsafePointer(codeNames[code] ?? unknownCode)
}

@_cdecl("cistern_connect")
public func cistern_connect(_ cluster: UnsafePointer<CChar>?, _ timeoutMilliseconds: Int32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    call { () throws(FFIError) in
        guard let out else { throw .invalid("out is NULL; pass the address of a cistern_store *") }
        out.pointee = nil
        guard let cluster else { throw .invalid("cluster is NULL; pass a cluster.yaml path, a data directory, or mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT") }
        guard let text = String(validatingCString: cluster) else { throw .invalid("cluster is not valid UTF-8") }
        guard timeoutMilliseconds >= 0 else { throw .invalid("timeout_ms is \(timeoutMilliseconds); pass 0 for the default or a positive number of milliseconds") }
        let config: ServerConfig.Cluster
        let token: String?
        do throws(ConfigError) {
            config = try ServerConfig.Cluster.locate(text)
            token = try ClientToken.locate(text)
        } catch {
            throw FFIError(code: Code.config, message: error.description)
        }
        try RuntimeOwner.claim()
        let timeout = UInt64(timeoutMilliseconds == 0 ? 30_000 : timeoutMilliseconds) * 1_000_000
        let managers = config.mgmtd.map(\.address).joined(separator: ", ")
        let options = {
            var o = ClientOptions()
            o.chunkTimeoutNanoseconds = 5_000_000_000
            return o
        }()
        let unanswered = "no cluster manager answered at \(managers) within \(timeout / 1_000_000) ms; is the cluster running (cistern up, or cistern server --role mgmtd)?"
        // A connect that runs out of time closes what it opened: here if the session
        // exists by then, else in the task once it sees the cancellation.
        let opened = Completion<ClientSession>()
        let session = try blocking(timeoutNanoseconds: timeout, what: "connect", timeoutMessage: unanswered, onTimeout: {
            if let s = opened.wait(nanoseconds: 0) { Task.detached { await s.close() } }
        }) { () throws(FFIError) -> ClientSession in
            let s: ClientSession
            do {
                s = try await ClientSession.connect(config, name: "libcistern", options: options, token: token)
            } catch {
                throw FFIError(code: Code.unavailable, message: "cannot start a client: \(error)")
            }
            opened.finish(s)
            while await s.client.mgmtd.routing == nil, !Task.isCancelled {
                try? await s.client.runtime.sleep(nanoseconds: 100_000_000)
                await s.client.mgmtd.refreshRouting()
            }
            if Task.isCancelled {
                await s.close()
                throw FFIError(code: Code.unavailable, message: unanswered)
            }
            if let r = await s.client.mgmtd.routing { s.resolver.update(from: r) }
            return s
        }
        let id = Registry.shared.add(StoreHandle(session: session, pid: getpid(), timeoutNanoseconds: timeout, description: text))
        out.pointee = handlePointer(id)
    }
}

@_cdecl("cistern_close")
public func cistern_close(_ store: OpaquePointer?) -> Int32 {
    call { () throws(FFIError) in
        let id = handleID(store)
        if id == 0 { return }
        guard let s = Registry.shared.removeStore(id) else { throw .invalid("unknown store handle \(id): closed twice or never returned by cistern_connect") }
        // After a fork the event loops are gone: drop the handle without waiting.
        guard s.pid == getpid() else { return }
        _ = try? blocking(timeoutNanoseconds: 5_000_000_000, what: "close") { () throws(FFIError) in await s.session.close() }
    }
}

@_cdecl("cistern_ns_open")
public func cistern_ns_open(_ store: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ pageBytes: UInt32, _ capacityPages: UInt64, _ durability: Int32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    call { () throws(FFIError) in
        guard let out else { throw .invalid("out is NULL; pass the address of a cistern_ns *") }
        out.pointee = nil
        let storeID = handleID(store)
        let s = try Registry.shared.store(storeID)
        guard let name else { throw .invalid("name is NULL") }
        guard let nsName = String(validatingCString: name) else { throw .invalid("name is not valid UTF-8") }
        let mode: KVDurability
        switch durability {
        case 0, 1: mode = .cache
        case 2: mode = .durable
        default: throw .invalid("durability \(durability) is unknown; use CISTERN_DURABILITY_CACHE (1) or CISTERN_DURABILITY_DURABLE (2)")
        }
        if pageBytes > 0 && capacityPages == 0 { throw .invalid("capacity_pages is 0; a namespace needs at least one page") }
        let client = s.session.client
        let ns = try clientCall(s, "open namespace '\(nsName)'") { () throws(CisternError) -> KVNamespace in
            if pageBytes == 0 { return try await client.kvNamespace(nsName) }
            return try await client.kvNamespace(nsName, pageBytes: Int(pageBytes), capacityPages: capacityPages, durability: mode)
        }
        guard let id = Registry.shared.add(NamespaceHandle(store: storeID, namespace: ns)) else {
            throw .invalid("the store was closed while the namespace was opened")
        }
        out.pointee = handlePointer(id)
    }
}

@_cdecl("cistern_ns_close")
public func cistern_ns_close(_ ns: OpaquePointer?) -> Int32 {
    call { () throws(FFIError) in
        let id = handleID(ns)
        if id == 0 { return }
        guard Registry.shared.removeNamespace(id) else { throw .invalid("unknown namespace handle \(id): closed twice or never returned by cistern_ns_open") }
    }
}

@_cdecl("cistern_batch_exists")
public func cistern_batch_exists(_ ns: OpaquePointer?, _ keys: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int, _ present: UnsafeMutablePointer<UInt8>?, _ hits: UnsafeMutablePointer<Int>?) -> Int32 {
    call { () throws(FFIError) in
        let (n, s) = try Registry.shared.namespace(handleID(ns))
        let names = try readKeys(keys, count)
        if names.isEmpty {
            hits?.pointee = 0
            return
        }
        let namespace = n.namespace
        let found = try clientCall(s, "batch_exists") { () throws(CisternError) -> KVExistsResult in try await namespace.exists(names) }
        if let present {
            for (i, p) in found.present.enumerated() { present[i] = p ? 1 : 0 }
        }
        hits?.pointee = found.consecutiveHits
    }
}

@_cdecl("cistern_batch_put_from")
public func cistern_batch_put_from(_ ns: OpaquePointer?, _ keys: UnsafePointer<UnsafePointer<CChar>?>?, _ pointers: UnsafePointer<UnsafeRawPointer?>?, _ sizes: UnsafePointer<Int>?, _ count: Int, _ results: UnsafeMutablePointer<Int32>?) -> Int32 {
    call { () throws(FFIError) in
        let (n, s) = try Registry.shared.namespace(handleID(ns))
        let names = try readKeys(keys, count)
        if names.isEmpty { return }
        guard let pointers else { throw .invalid("ptrs is NULL but count is \(count)") }
        guard let sizes else { throw .invalid("sizes is NULL but count is \(count)") }
        guard let results else { throw .invalid("results is NULL; pass an int32_t array of count entries") }
        let pageBytes = n.namespace.pageBytes
        // Every page is read here, on the caller's thread, before the call returns.
        var pages: [(key: String, bytes: [UInt8])] = []
        var slots: [Int] = []
        pages.reserveCapacity(count)
        var firstRefusal: String?
        for i in 0..<count {
            let size = sizes[i]
            guard size >= 0 else { throw .invalid("sizes[\(i)] is negative") }
            if size > pageBytes {
                results[i] = Code.tooLarge
                if firstRefusal == nil { firstRefusal = "page for key '\(names[i].prefix(80))' has \(size) bytes, more than the namespace's page size of \(pageBytes) bytes" }
                continue
            }
            guard let p = pointers[i] else {
                if size == 0 {
                    pages.append((names[i], []))
                    slots.append(i)
                    continue
                }
                throw .invalid("ptrs[\(i)] is NULL with sizes[\(i)] = \(size)")
            }
            pages.append((names[i], Array(UnsafeRawBufferPointer(start: p, count: size))))
            slots.append(i)
        }
        let namespace = n.namespace
        let toPut = pages
        let outcomes = try clientCall(s, "batch_put_from") { () throws(CisternError) -> [KVPutOutcome] in
            toPut.isEmpty ? [] : try await namespace.put(toPut)
        }
        for (slot, outcome) in zip(slots, outcomes) {
            switch outcome {
            case .stored: results[slot] = 0
            case .existed: results[slot] = 1
            case .full:
                results[slot] = Code.full
                if firstRefusal == nil { firstRefusal = "no page slot free for key '\(names[slot].prefix(80))': every slot of namespace '\(namespace.name)' is reserved or being read; retry, or create a larger namespace" }
            case .failed(let why):
                results[slot] = Code.io
                if firstRefusal == nil { firstRefusal = "key '\(names[slot].prefix(80))' was not stored: \(why)" }
            case .noSpace(let why):
                results[slot] = Code.noSpace
                if firstRefusal == nil { firstRefusal = "key '\(names[slot].prefix(80))' was not stored: \(why)" }
            }
        }
        if let firstRefusal { LastError.set(firstRefusal) }
    }
}

@_cdecl("cistern_batch_get_into")
public func cistern_batch_get_into(_ ns: OpaquePointer?, _ keys: UnsafePointer<UnsafePointer<CChar>?>?, _ pointers: UnsafePointer<UnsafeMutableRawPointer?>?, _ sizes: UnsafePointer<Int>?, _ count: Int, _ results: UnsafeMutablePointer<Int64>?) -> Int32 {
    call { () throws(FFIError) in
        let (n, s) = try Registry.shared.namespace(handleID(ns))
        let names = try readKeys(keys, count)
        if names.isEmpty { return }
        guard let pointers else { throw .invalid("ptrs is NULL but count is \(count)") }
        guard let sizes else { throw .invalid("sizes is NULL but count is \(count)") }
        guard let results else { throw .invalid("results is NULL; pass an int64_t array of count entries") }
        for i in 0..<count {
            guard sizes[i] >= 0 else { throw .invalid("sizes[\(i)] is negative") }
            if pointers[i] == nil && sizes[i] > 0 { throw .invalid("ptrs[\(i)] is NULL with sizes[\(i)] = \(sizes[i])") }
        }
        let namespace = n.namespace
        let found = try clientCall(s, "batch_get_into") { () throws(CisternError) -> [KVGetResult] in try await namespace.get(names) }
        // Copied here, on the caller's thread, after the read finished.
        var firstRefusal: String?
        for (i, r) in found.enumerated() {
            switch r {
            case .found(let bytes):
                guard bytes.count <= sizes[i] else {
                    results[i] = Int64(Code.small)
                    if firstRefusal == nil { firstRefusal = "the buffer for key '\(names[i].prefix(80))' has \(sizes[i]) bytes; the page has \(bytes.count)" }
                    continue
                }
                if !bytes.isEmpty, let dst = pointers[i] {
                    bytes.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
                }
                results[i] = Int64(bytes.count)
            case .missing:
                results[i] = Int64(Code.notFound)
            case .failed(let why):
                results[i] = Int64(Code.io)
                if firstRefusal == nil { firstRefusal = "key '\(names[i].prefix(80))' could not be read: \(why)" }
            }
        }
        if let firstRefusal { LastError.set(firstRefusal) }
    }
}

@_cdecl("cistern_batch_delete")
public func cistern_batch_delete(_ ns: OpaquePointer?, _ keys: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int, _ deleted: UnsafeMutablePointer<Int>?) -> Int32 {
    call { () throws(FFIError) in
        let (n, s) = try Registry.shared.namespace(handleID(ns))
        let names = try readKeys(keys, count)
        if names.isEmpty {
            deleted?.pointee = 0
            return
        }
        let namespace = n.namespace
        let gone = try clientCall(s, "batch_delete") { () throws(CisternError) -> Int in try await namespace.delete(names) }
        deleted?.pointee = gone
    }
}

@_cdecl("cistern_ns_usage")
public func cistern_ns_usage(_ ns: OpaquePointer?, _ out: UnsafeMutableRawPointer?) -> Int32 {
    call { () throws(FFIError) in
        let (n, s) = try Registry.shared.namespace(handleID(ns))
        guard let out else { throw .invalid("out is NULL; pass a cistern_usage with size = sizeof(cistern_usage)") }
        let size = out.load(as: UInt64.self)
        guard size >= 8, size % 8 == 0 else { throw .invalid("out->size is \(size); set it to sizeof(cistern_usage)") }
        let namespace = n.namespace
        let u = try clientCall(s, "usage") { () throws(CisternError) -> KVUsage in try await namespace.usage() }
        let fields: [UInt64] = [u.capacityPages, u.confirmed, u.reserved, u.free, u.highWater, UInt64(namespace.pageBytes), UInt64(namespace.config.durability.rawValue)]
        let words = out.assumingMemoryBound(to: UInt64.self)
        for (i, v) in fields.enumerated() where UInt64(i + 2) * 8 <= size { words[i + 1] = v }
    }
}
