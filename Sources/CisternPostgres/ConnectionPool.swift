import CisternCore
import Synchronization

/// A connection shared between threads: the `Mutex` hands the libpq connection to one
/// thread at a time, and the FIFO gate keeps at most one of its statements queued on
/// the thread pool (so statements of other transactions never wait behind it for a
/// thread, see `PostgresKV`).
final class PooledConnection: Sendable {
    let database: Mutex<PostgresConnection>
    let gate = AsyncFIFOLock()

    init(_ connection: consuming sending PostgresConnection) {
        database = Mutex(connection)
    }
}

/// At most `capacity` connections, created on demand and lent to one transaction at a
/// time. Callers that find every connection lent wait in arrival order (not
/// cancellable). A broken connection is closed on return and its place freed.
final class ConnectionPool: Sendable {
    /// What `acquire` gives its caller.
    enum Grant: Sendable {
        /// An idle connection.
        case connection(PooledConnection)
        /// A free place: the caller creates a connection (or calls `abandon`).
        case create
        /// The pool is closed.
        case closed
    }

    private struct State: ~Copyable {
        var idle: [PooledConnection] = []
        /// Connections lent or idle, plus places granted for creation.
        var total = 0
        var waiters: [CheckedContinuation<Grant, Never>] = []
        var closed = false
        /// `close` calls waiting for the lent connections to come back.
        var drained: [CheckedContinuation<Void, Never>] = []
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int, first: PooledConnection) {
        self.capacity = max(1, capacity)
        state.withLock { state in
            state.idle = [first]
            state.total = 1
        }
    }

    /// An idle connection, a place to create one, or (after `close`) `closed`; waits
    /// while every connection is lent.
    func acquire() async -> Grant {
        if let grant = state.withLock({ Self.grantNow(&$0, capacity: capacity) }) { return grant }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Grant, Never>) in
            let grant = state.withLock { state -> Grant? in
                if let grant = Self.grantNow(&state, capacity: capacity) { return grant }
                state.waiters.append(continuation)
                return nil
            }
            if let grant { continuation.resume(returning: grant) }
        }
    }

    private static func grantNow(_ state: inout State, capacity: Int) -> Grant? {
        if state.closed { return .closed }
        if let connection = state.idle.popLast() { return .connection(connection) }
        if state.total < capacity {
            state.total += 1
            return .create
        }
        return nil
    }

    /// Returns a lent connection: idle again if it is reusable, else closed and its
    /// place handed on.
    func release(_ connection: PooledConnection) {
        let reusable = connection.database.withLock { db in
            if !db.isReusable { db.close() }
            return db.isReusable
        }
        let (waiter, grant, closeIt, drained) = state.withLock {
            state -> (CheckedContinuation<Grant, Never>?, Grant, Bool, [CheckedContinuation<Void, Never>]) in
            if state.closed {
                state.total -= 1
                return (nil, .closed, reusable, Self.takeDrained(&state))
            }
            if !state.waiters.isEmpty {
                let waiter = state.waiters.removeFirst()
                return (waiter, reusable ? .connection(connection) : .create, false, [])
            }
            if reusable { state.idle.append(connection) } else { state.total -= 1 }
            return (nil, .closed, false, [])
        }
        if closeIt { connection.database.withLock { $0.close() } }
        waiter?.resume(returning: grant)
        for continuation in drained { continuation.resume() }
    }

    /// Gives back a place granted by `.create` whose connection could not be made.
    func abandon() {
        let (waiter, drained) = state.withLock {
            state -> (CheckedContinuation<Grant, Never>?, [CheckedContinuation<Void, Never>]) in
            if !state.closed && !state.waiters.isEmpty { return (state.waiters.removeFirst(), []) }
            state.total -= 1
            return (nil, state.closed ? Self.takeDrained(&state) : [])
        }
        waiter?.resume(returning: .create)
        for continuation in drained { continuation.resume() }
    }

    /// The `close` calls to wake once nothing is lent any more.
    private static func takeDrained(_ state: inout State) -> [CheckedContinuation<Void, Never>] {
        guard state.total <= 0 else { return [] }
        let drained = state.drained
        state.drained = []
        return drained
    }

    /// Refuses new transactions, waits until every lent connection is back, then
    /// closes them all (idempotent).
    func close() async {
        let (idle, waiters) = state.withLock { state -> ([PooledConnection], [CheckedContinuation<Grant, Never>]) in
            state.closed = true
            let idle = state.idle
            state.idle = []
            state.total -= idle.count
            let waiters = state.waiters
            state.waiters = []
            return (idle, waiters)
        }
        for connection in idle { connection.database.withLock { $0.close() } }
        for waiter in waiters { waiter.resume(returning: .closed) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.total <= 0 { return true }
                state.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Closes the idle connections without waiting (for `deinit`, when none is lent).
    func closeIdleNow() {
        let idle = state.withLock { state -> [PooledConnection] in
            state.closed = true
            let idle = state.idle
            state.idle = []
            state.total -= idle.count
            return idle
        }
        for connection in idle { connection.database.withLock { $0.close() } }
    }
}
