import CisternCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A `Resolver` that maps each node to host names and ports and looks the names up
/// with `getaddrinfo` at every call (on `NIOThreadPool.singleton`, since lookups
/// block), so a changed IP behind a name is followed on the next connection attempt.
///
/// Promises: `resolve` returns numeric addresses, the names' results in the order the
/// names were given (each name's results in `getaddrinfo` order), without duplicates.
/// A name that fails to resolve is skipped while another resolves; when none
/// resolves, the call fails with `.unreachable` naming each lookup error.
public final class DNSResolver: CisternCore.Resolver {
    /// A host name (or literal IP) and the port the node listens on there.
    public struct Name: Hashable, Sendable, CustomStringConvertible {
        public var host: String
        public var port: UInt16
        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    private let table: Mutex<[NodeID: [Name]]>
    private let threadPool: NIOThreadPool

    public init(_ table: [NodeID: [Name]] = [:], threadPool: NIOThreadPool = .singleton) {
        self.table = Mutex(table)
        self.threadPool = threadPool
    }

    /// Replaces `node`'s names; their addresses are tried in order.
    public func set(_ node: NodeID, _ names: [Name]) {
        table.withLock { $0[node] = names }
    }

    /// Forgets `node`.
    public func remove(_ node: NodeID) {
        table.withLock { _ = $0.removeValue(forKey: node) }
    }

    public func resolve(_ node: NodeID) async throws(TransportError) -> [NodeAddress] {
        let names = table.withLock { $0[node] ?? [] }
        guard !names.isEmpty else {
            throw .unreachable(node: node, reason: "no host name known for \(node); add it to the config")
        }
        var addresses: [NodeAddress] = []
        var failures: [String] = []
        for name in names {
            let outcome: Result<[String], LookupFailure>
            do {
                outcome = try await threadPool.runIfActive { Self.lookup(name.host) }
            } catch {
                throw .unreachable(node: node, reason: "cannot look up \(name.host): \(error)")
            }
            switch outcome {
            case .success(let hosts):
                for host in hosts {
                    let address = NodeAddress(host: host, port: name.port)
                    if !addresses.contains(address) { addresses.append(address) }
                }
            case .failure(let failure):
                failures.append("\(name.host): \(failure.message)")
            }
        }
        guard !addresses.isEmpty else {
            throw .unreachable(
                node: node, reason: "DNS lookup failed (\(failures.joined(separator: "; "))); check the names in the config")
        }
        return addresses
    }

    struct LookupFailure: Error {
        let message: String
    }

    /// Numeric addresses of `host` for stream sockets, in `getaddrinfo` order (blocking).
    static func lookup(_ host: String) -> Result<[String], LookupFailure> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if os(Linux)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0 else {
            let text = gai_strerror(rc).map { String(cString: $0) } ?? "error \(rc)"
            return .failure(LookupFailure(message: text))
        }
        defer { freeaddrinfo(list) }
        var hosts: [String] = []
        var entry = list
        while let info = entry {
            if let sa = info.pointee.ai_addr {
                var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                if getnameinfo(sa, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                    let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                    if !hosts.contains(text) { hosts.append(text) }
                }
            }
            entry = info.pointee.ai_next
        }
        guard !hosts.isEmpty else { return .failure(LookupFailure(message: "no addresses")) }
        return .success(hosts)
    }
}
