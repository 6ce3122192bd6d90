import CisternCore
import CisternWire
import Synchronization

/// Why a register operation did not complete. `noQuorum` leaves a write's outcome
/// unknown: it may have reached some replicas.
public enum RegisterError: Error, Equatable, Sendable, CustomStringConvertible {
    case noQuorum(key: String, answered: Int, needed: Int, lastError: String)
    public var description: String {
        switch self {
        case .noQuorum(let k, let a, let n, let e):
            return "register '\(k)': only \(a) of the \(n) replicas needed answered (last error: \(e))"
        }
    }
}

/// A client of the demo register: the ABD algorithm (majority quorums, read with
/// write-back), which is linearizable while a majority of replicas is reachable.
public actor RegisterClient {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let runtime: any Runtime
    let transport: any Transport
    let replicas: [NodeID]
    let writerID: UInt32
    public let timeoutNanoseconds: UInt64
    /// A deliberately broken mode for checker self-tests: reads ask one replica and
    /// skip the write-back, so they can return stale values.
    public let plantedStaleReads: Bool

    public init(runtime: any Runtime, transport: any Transport, replicas: [NodeID], writerID: UInt32, timeoutNanoseconds: UInt64, plantedStaleReads: Bool = false) {
        self.plantedStaleReads = plantedStaleReads
        self.runtime = runtime
        self.transport = transport
        self.replicas = replicas
        self.writerID = writerID
        self.timeoutNanoseconds = timeoutNanoseconds
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    var majority: Int { replicas.count / 2 + 1 }

    public func write(_ key: String, _ value: String) async throws(RegisterError) {
        let seen = try await quorum(key, .read(key: key))
        let newest = seen.map(\.stamp).max() ?? .zero
        _ = try await quorum(key, .write(key: key, stamp: Stamp(counter: newest.counter + 1, writer: writerID), value: value))
    }

    public func read(_ key: String) async throws(RegisterError) -> String? {
        let seen = try await quorum(key, .read(key: key), needed: plantedStaleReads ? 1 : majority)
        if plantedStaleReads { return seen.first?.value }
        let newest = seen.max { $0.stamp < $1.stamp } ?? RegisterReply(stamp: .zero, value: nil)
        if seen.contains(where: { $0.stamp != newest.stamp }) {
            // Write back so no later read can return an older value.
            _ = try await quorum(key, .write(key: key, stamp: newest.stamp, value: newest.value))
        }
        return newest.value
    }

    /// Sends `request` to every replica and returns as soon as a majority answered.
    private func quorum(_ key: String, _ request: RegisterRequest, needed: Int? = nil) async throws(RegisterError) -> [RegisterReply] {
        let gather = QuorumGather(needed: needed ?? majority, total: replicas.count)
        let message = request.message()
        let timeout = timeoutNanoseconds
        let outcome = await withUnsafeContinuation { (c: UnsafeContinuation<QuorumGather.Outcome, Never>) in
            gather.setContinuation(c)
            for replica in replicas {
                runtime.spawn("register.quorum") { [transport] in
                    do {
                        let response = try await transport.call(replica, service: registerService, message, timeoutNanoseconds: timeout)
                        gather.add(.success(try RegisterReply(wireBytes: response.header)))
                    } catch {
                        gather.add(.failure("\(error)"))
                    }
                }
            }
        }
        switch outcome {
        case .reached(let replies): return replies
        case .failed(let answered, let last):
            throw .noQuorum(key: key, answered: answered, needed: majority, lastError: last)
        }
    }
}

/// Collects answers until `needed` succeeded or too many failed, then resumes once.
final class QuorumGather: Sendable {
    enum Outcome: Sendable {
        case reached([RegisterReply])
        case failed(answered: Int, lastError: String)
    }

    private struct State {
        var replies: [RegisterReply] = []
        var failures = 0
        var lastError = ""
        var continuation: UnsafeContinuation<Outcome, Never>?
        var early: Outcome?
        var done = false
    }

    let needed: Int
    let total: Int
    private let state = Mutex(State())

    init(needed: Int, total: Int) {
        self.needed = needed
        self.total = total
    }

    func setContinuation(_ c: UnsafeContinuation<Outcome, Never>) {
        let early: Outcome? = state.withLock { s in
            if let e = s.early { return e }
            s.continuation = c
            return nil
        }
        if let early { c.resume(returning: early) }
    }

    func add(_ result: Result<RegisterReply, Failure>) {
        let resume: (UnsafeContinuation<Outcome, Never>?, Outcome)? = state.withLock { s in
            guard !s.done else { return nil }
            switch result {
            case .success(let r): s.replies.append(r)
            case .failure(let f):
                s.failures += 1
                s.lastError = f.text
            }
            let outcome: Outcome
            if s.replies.count >= needed {
                outcome = .reached(s.replies)
            } else if s.failures > total - needed {
                outcome = .failed(answered: s.replies.count, lastError: s.lastError)
            } else {
                return nil
            }
            s.done = true
            if let c = s.continuation { return (c, outcome) }
            s.early = outcome
            return (nil, outcome)
        }
        if let (c, outcome) = resume, let c { c.resume(returning: outcome) }
    }

    struct Failure: Error {
        let text: String
    }
}

extension Result where Failure == QuorumGather.Failure {
    static func failure(_ text: String) -> Self { .failure(QuorumGather.Failure(text: text)) }
}
