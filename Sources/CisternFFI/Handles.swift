import Cistern
import CisternConnect
import CisternKV
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A failure of a C call: the code it returns and the message `cistern_last_error`
/// gives.
struct FFIError: Error {
    var code: Int32
    var message: String

    static func invalid(_ message: String) -> FFIError { FFIError(code: Code.invalid, message: message) }

    /// The code and message of a client error.
    init(_ error: CisternError) {
        self.message = error.description
        switch error {
        case .kv(.noSuchNamespace): code = Code.notFound
        case _ where error.isPermissionDenied: code = Code.permission
        case .kv(.namespaceMismatch): code = Code.mismatch
        case .kv(.invalidKey), .kv(.invalidNamespace), .kv(.invalidConfig), .kv(.tenant), .invalidArgument: code = Code.invalid
        case .kv(.batchTooLarge), .kv(.pageTooLarge): code = Code.tooLarge
        case .kv(.noSpace), .meta(.refused(.noSpace, _)): code = Code.noSpace
        case .kv(.unavailable), .meta: code = Code.unavailable
        case .storage(.noSpace): code = Code.noSpace
        case .storage: code = Code.io
        }
    }

    init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }
}

/// The codes of `cistern.h`.
enum Code {
    static let ok: Int32 = 0
    static let invalid: Int32 = -1
    static let notFound: Int32 = -2
    static let unavailable: Int32 = -3
    static let tooLarge: Int32 = -4
    static let full: Int32 = -5
    static let config: Int32 = -6
    static let forked: Int32 = -7
    static let io: Int32 = -8
    static let mismatch: Int32 = -9
    static let small: Int32 = -10
    static let `internal`: Int32 = -11
    static let noSpace: Int32 = -12
    static let permission: Int32 = -13

    static let names: [Int32: String] = [
        ok: "CISTERN_OK", invalid: "CISTERN_EINVAL", notFound: "CISTERN_ENOTFOUND", unavailable: "CISTERN_EUNAVAILABLE",
        tooLarge: "CISTERN_ETOOLARGE", full: "CISTERN_EFULL", config: "CISTERN_ECONFIG", forked: "CISTERN_EFORK",
        io: "CISTERN_EIO", mismatch: "CISTERN_EMISMATCH", small: "CISTERN_ESMALL", `internal`: "CISTERN_EINTERNAL",
        noSpace: "CISTERN_ENOSPACE", permission: "CISTERN_EPERM",
    ]
}

/// A connected store: the client session and the process that made it.
final class StoreHandle: Sendable {
    let session: ClientSession
    let pid: pid_t
    let timeoutNanoseconds: UInt64
    let description: String

    init(session: ClientSession, pid: pid_t, timeoutNanoseconds: UInt64, description: String) {
        self.session = session
        self.pid = pid
        self.timeoutNanoseconds = timeoutNanoseconds
        self.description = description
    }
}

/// An open namespace of a store.
final class NamespaceHandle: Sendable {
    let store: UInt
    let namespace: KVNamespace

    init(store: UInt, namespace: KVNamespace) {
        self.store = store
        self.namespace = namespace
    }
}

/// Every live handle by number. A handle given to C is its number, never a pointer
/// to Swift memory, so a closed, forged or repeated handle is refused, not followed.
final class Registry: Sendable {
    static let shared = Registry()

    private struct Table {
        var next: UInt = 1
        var stores: [UInt: StoreHandle] = [:]
        var namespaces: [UInt: NamespaceHandle] = [:]
    }

    private let table = Mutex(Table())

    func add(_ store: StoreHandle) -> UInt {
        table.withLock { t in
            let id = t.next
            t.next += 1
            t.stores[id] = store
            return id
        }
    }

    func add(_ namespace: NamespaceHandle) -> UInt? {
        table.withLock { t in
            guard t.stores[namespace.store] != nil else { return nil }
            let id = t.next
            t.next += 1
            t.namespaces[id] = namespace
            return id
        }
    }

    func store(_ id: UInt) throws(FFIError) -> StoreHandle {
        guard let s = table.withLock({ $0.stores[id] }) else {
            throw .invalid(id == 0 ? "the store handle is NULL; connect first (cistern_connect)" : "unknown store handle \(id): it was closed or never returned by cistern_connect")
        }
        try Self.checkProcess(s)
        return s
    }

    func namespace(_ id: UInt) throws(FFIError) -> (NamespaceHandle, StoreHandle) {
        let found = table.withLock { t -> (NamespaceHandle, StoreHandle?)? in
            guard let n = t.namespaces[id] else { return nil }
            return (n, t.stores[n.store])
        }
        guard let (n, s) = found else {
            throw .invalid(id == 0 ? "the namespace handle is NULL; open one first (cistern_ns_open)" : "unknown namespace handle \(id): it was closed or never returned by cistern_ns_open")
        }
        guard let s else { throw .invalid("namespace handle \(id) belongs to a store that was closed; connect and open the namespace again") }
        try Self.checkProcess(s)
        return (n, s)
    }

    func removeStore(_ id: UInt) -> StoreHandle? {
        table.withLock { t in
            guard let s = t.stores.removeValue(forKey: id) else { return nil }
            t.namespaces = t.namespaces.filter { $0.value.store != id }
            return s
        }
    }

    func removeNamespace(_ id: UInt) -> Bool {
        table.withLock { $0.namespaces.removeValue(forKey: id) != nil }
    }

    static func checkProcess(_ s: StoreHandle) throws(FFIError) {
        let me = getpid()
        guard me == s.pid else {
            throw FFIError(code: Code.forked, message: "this store was connected in process \(s.pid) and used in process \(me), forked after it: its event loops do not exist here, and libcistern cannot start them again in a process forked after it connected: use the store only in processes started fresh (multiprocessing 'spawn') or forked before the first connect (the Python Store connects on first use, so one made before such a fork works in the child)")
        }
    }
}

/// The process whose threads the library runs in: its event loops and task threads
/// start with the first connect and do not survive a fork.
enum RuntimeOwner {
    static let pid = Mutex<pid_t?>(nil)

    static func claim() throws(FFIError) {
        let me = getpid()
        let owner = pid.withLock { p -> pid_t in
            if p == nil { p = me }
            return p!
        }
        guard owner == me else {
            throw FFIError(code: Code.forked, message: "libcistern started its threads in process \(owner) and this process (\(me)) was forked from it afterwards, so they do not exist here; connect only in processes started fresh (multiprocessing 'spawn') or forked before the first connect")
        }
    }
}

/// The last error message of each thread, for `cistern_last_error`.
enum LastError {
    static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    static func set(_ message: String) {
        let old = pthread_getspecific(key)
        pthread_setspecific(key, strdup(message))
        free(old)
    }

    static func get() -> UnsafePointer<CChar>? {
        if let p = pthread_getspecific(key) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
        set("")
        return pthread_getspecific(key).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
    }
}

/// Where an async call's answer meets the C thread that waits for it.
final class Completion<T: Sendable>: Sendable {
    private let value = Mutex<T?>(nil)
    private let semaphore = DispatchSemaphore(value: 0)

    func finish(_ v: T) {
        value.withLock { $0 = v }
        semaphore.signal()
    }

    func wait(nanoseconds: UInt64) -> T? {
        let deadline = DispatchTime.now() + .nanoseconds(Int(clamping: nanoseconds))
        if semaphore.wait(timeout: deadline) == .timedOut { return nil }
        return value.withLock { $0 }
    }
}

/// The C boundary, like the CLI and the server processes, is a process shell, not
/// component code: it bridges a C caller's thread into Swift concurrency with a
/// detached task and a semaphore, and bounds the wait by the wall clock.
///
/// Runs `operation` on the library's own threads and blocks the calling (C) thread
/// until it ends or `timeoutNanoseconds` pass; then the operation is cancelled and the
/// call fails. The operation never touches the caller's memory, so a late end is
/// harmless.
func blocking<T: Sendable>(timeoutNanoseconds: UInt64, what: String, timeoutMessage: String? = nil, onTimeout: () -> Void = {}, _ operation: @escaping @Sendable () async throws(FFIError) -> T) throws(FFIError) -> T {
    let done = Completion<Result<T, FFIError>>()
    let task = Task.detached {
        do throws(FFIError) {
            done.finish(.success(try await operation()))
        } catch {
            done.finish(.failure(error))
        }
    }
    guard let result = done.wait(nanoseconds: timeoutNanoseconds) else {
        task.cancel()
        onTimeout()
        throw FFIError(code: Code.unavailable, message: timeoutMessage ?? "\(what): no answer from the cluster within \(timeoutNanoseconds / 1_000_000) ms; is it running and reachable? (raise the timeout in cistern_connect for slow clusters)")
    }
    return try result.get()
}

/// `blocking` for a client call on `store`, bounded by the store's timeout, with the
/// client's error turned into its code and message.
func clientCall<T: Sendable>(_ store: StoreHandle, _ what: String, _ operation: @escaping @Sendable () async throws(CisternError) -> T) throws(FFIError) -> T {
    try blocking(timeoutNanoseconds: store.timeoutNanoseconds, what: what) { () throws(FFIError) -> T in
        do throws(CisternError) { return try await operation() } catch { throw FFIError(error) }
    }
}
