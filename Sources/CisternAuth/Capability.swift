import CisternWire
import Crypto
import Foundation
import Synchronization

/// What a capability allows on the chunks of its inode.
public struct Rights: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let read = Rights(rawValue: 1)
    public static let write = Rights(rawValue: 2)
    /// Server-to-server requests (forwarding, resync, garbage collection) on any
    /// chunk: only servers, which hold the cluster key, can mint it.
    public static let service = Rights(rawValue: 4)
    public static let readWrite: Rights = [.read, .write]
    public static let all: Rights = [.read, .write, .service]

    public var description: String {
        var parts: [String] = []
        if contains(.read) { parts.append("read") }
        if contains(.write) { parts.append("write") }
        if contains(.service) { parts.append("service") }
        return parts.isEmpty ? "none" : parts.joined(separator: "+")
    }
}

/// Permission to use the chunks of one file (inode), issued by a metadata server to
/// a caller that may use the file, and checked by storage servers without a round
/// trip: a keyed MAC (HMAC-SHA-256, 16 bytes) over the inode and rights under the
/// cluster key that metadata and storage servers share. A client that guesses
/// another tenant's chunk ids has no capability for their inode and is refused.
///
/// Capabilities do not expire: an inode number is never reused, so a capability
/// outlives only its own file. Rotating the cluster key withdraws every one.
public struct Capability: Sendable, Hashable, WireCodable, CustomStringConvertible {
    public static let macBytes = 16
    /// The file whose chunks it covers; 0 (never an inode) with `.service`: every chunk.
    public var inode: UInt64
    public var rights: Rights
    public var mac: [UInt8]

    public init(inode: UInt64, rights: Rights, mac: [UInt8]) {
        self.inode = inode
        self.rights = rights
        self.mac = mac
    }

    public var description: String { "capability(inode \(inode), \(rights))" }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { m in
            m.writeVarint(inode)
            m.writeVarint(UInt64(rights.rawValue))
            m.writeBytes(mac)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("Capability") { r throws(WireError) -> Capability in
            let inode = try r.readVarint("capability inode")
            guard let rights = UInt8(exactly: try r.readVarint("capability rights")) else {
                throw .invalidValue(what: "capability rights", detail: "beyond 8 bits")
            }
            let mac = try r.readBytes("capability mac")
            guard mac.count == Capability.macBytes else {
                throw .invalidValue(what: "capability mac", detail: "\(mac.count) bytes, expected \(Capability.macBytes)")
            }
            return Capability(inode: inode, rights: Rights(rawValue: rights), mac: mac)
        }
    }
}

/// Why credentials or a key were refused; each names the fix.
public enum AuthError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No token, or one the tenant registry does not know (revoked, mistyped).
    case unauthenticated(String)
    /// The caller is known but may not do this.
    case forbidden(String)
    /// A cluster key file that cannot be used.
    case badKey(String)
    /// The credentials could not be checked now (the store is unreachable): retry.
    case unavailable(String)

    public var description: String {
        switch self {
        case .unauthenticated(let why): return "authentication failed: \(why)"
        case .forbidden(let why): return "permission denied: \(why)"
        case .badKey(let why): return "unusable cluster key: \(why)"
        case .unavailable(let why): return why
        }
    }
}

/// The cluster key: mints capabilities (metadata servers) and checks them (storage
/// servers). 32 random bytes, kept in a file as 64 hex digits.
public struct CapabilityKey: Sendable {
    /// The secret (SymmetricKey is not Sendable; one is made per use, 32 bytes).
    private let secret: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: secret) }
    /// The service capability (every chunk, every right), minted once.
    public let service: Capability
    public static let secretBytes = 32

    public init(secret: [UInt8]) throws(AuthError) {
        guard secret.count >= 16 else { throw .badKey("\(secret.count) bytes; a cluster key has at least 16 (generate one with: cistern keygen)") }
        self.secret = secret
        self.service = Self.mint(SymmetricKey(data: secret), inode: 0, rights: .all)
    }

    /// Parses a key file's text: hex digits (at least 32), surrounding whitespace ignored.
    public init(hex text: String) throws(AuthError) {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard t.count >= 32, t.count % 2 == 0 else {
            throw .badKey("expected at least 32 hex digits, found \(t.count) characters (generate one with: cistern keygen)")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(t.count / 2)
        var i = t.startIndex
        while i < t.endIndex {
            let j = t.index(i, offsetBy: 2)
            guard let b = UInt8(t[i..<j], radix: 16) else { throw .badKey("'\(t[i..<j])' is not a hex byte") }
            bytes.append(b)
            i = j
        }
        try self.init(secret: bytes)
    }

    /// A fresh key as hex, from the system's random generator (for `cistern keygen`
    /// and `cistern up`; never called by components).
    public static func generateHex() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<secretBytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
    }

    static func input(inode: UInt64, rights: Rights) -> [UInt8] {
        var out = Array("cistern-capability-v1".utf8)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: inode >> (8 * UInt64(i)))) }
        out.append(rights.rawValue)
        return out
    }

    static func mint(_ key: SymmetricKey, inode: UInt64, rights: Rights) -> Capability {
        let code = HMAC<SHA256>.authenticationCode(for: input(inode: inode, rights: rights), using: key)
        return Capability(inode: inode, rights: rights, mac: Array(Array(code).prefix(Capability.macBytes)))
    }

    /// A capability for `inode`'s chunks with `rights` (never `.service`: use `service`).
    public func mint(inode: UInt64, rights: Rights) -> Capability {
        Self.mint(key, inode: inode, rights: rights.subtracting(.service))
    }

    /// Whether `capability` was minted under this key (compared in constant time).
    public func verify(_ capability: Capability) -> Bool {
        guard capability.mac.count == Capability.macBytes else { return false }
        let expected = Array(Array(HMAC<SHA256>.authenticationCode(for: Self.input(inode: capability.inode, rights: capability.rights), using: key)).prefix(Capability.macBytes))
        var diff: UInt8 = 0
        for i in 0..<Capability.macBytes { diff |= expected[i] ^ capability.mac[i] }
        return diff == 0
    }

    /// Why `presented` does not allow `needed` on every inode of `inodes` (nil: it does).
    /// A valid service capability allows everything.
    public func check(needed: Rights, inodes: some Sequence<UInt64>, presented: [Capability]) -> String? {
        var valid: [UInt64: Rights] = [:]
        for c in presented where verify(c) {
            if c.rights.contains(.service) { return nil }
            valid[c.inode, default: []].formUnion(c.rights)
        }
        if needed.contains(.service) {
            return "this request is for servers only (it needs the cluster's service capability)"
        }
        for inode in inodes {
            guard let r = valid[inode] else {
                return "no valid capability for inode \(inode); open the file or namespace through a metadata server with your token first"
            }
            guard r.isSuperset(of: needed) else { return "the capability for inode \(inode) allows \(r), not \(needed)" }
        }
        return nil
    }
}

/// What travels behind a request or reply body, when authentication is on: the
/// caller's token (requests) and capabilities (requests: for the chunks or inodes
/// they name; replies: minted for the files they return). An optional trailer after
/// the body, so servers and clients without authentication never see it.
public struct AuthTrailer: Sendable, Equatable, WireCodable {
    public var token: String?
    public var capabilities: [Capability]
    /// Limits: a token's length and the capabilities one message carries.
    public static let tokenBytesMax = 256
    public static let capabilitiesMax = 1_024

    public init(token: String? = nil, capabilities: [Capability] = []) {
        self.token = token
        self.capabilities = capabilities
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { m in
            m.write(token)
            m.write(capabilities)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("AuthTrailer") { r throws(WireError) -> AuthTrailer in
            let token = try r.read(String?.self)
            if let token, token.utf8.count > AuthTrailer.tokenBytesMax {
                throw .invalidValue(what: "token", detail: "\(token.utf8.count) bytes, at most \(AuthTrailer.tokenBytesMax)")
            }
            let caps = try r.read([Capability].self)
            guard caps.count <= AuthTrailer.capabilitiesMax else {
                throw .invalidValue(what: "capabilities", detail: "\(caps.count), at most \(AuthTrailer.capabilitiesMax)")
            }
            return AuthTrailer(token: token, capabilities: caps)
        }
    }

    /// `body` followed by this trailer.
    public func appended(to body: [UInt8]) -> [UInt8] {
        var w = WireWriter()
        encode(to: &w)
        return body + w.bytes
    }

    /// The trailer after the body that `reader` has just read (nil if none);
    /// anything after the trailer is refused.
    public static func read(after reader: inout WireReader) throws(WireError) -> AuthTrailer? {
        guard !reader.isAtEnd else { return nil }
        let t = try AuthTrailer(from: &reader)
        guard reader.isAtEnd else { throw .invalidValue(what: "message", detail: "\(reader.remaining) byte(s) after the auth trailer") }
        return t
    }
}

/// The capabilities a client holds, by inode (bounded: the oldest are dropped past
/// `capacity`; open handles re-add theirs on use), or the service capability of a
/// server, which covers everything.
public final class CapabilityWallet: Sendable {
    struct State {
        var byInode: [UInt64: Capability] = [:]
        var order: [UInt64] = []
        var head = 0
    }
    private let state = Mutex(State())
    public let service: Capability?
    public let capacity: Int

    public init(capacity: Int = 65_536) {
        self.service = nil
        self.capacity = max(1, capacity)
    }

    /// A server's wallet: every request carries the service capability.
    public init(serviceOf key: CapabilityKey) {
        self.service = key.service
        self.capacity = 1
    }

    public func insert(_ capabilities: some Sequence<Capability>) {
        guard service == nil else { return }
        state.withLock { s in
            for c in capabilities {
                if s.byInode.updateValue(c, forKey: c.inode) == nil { s.order.append(c.inode) }
            }
            while s.byInode.count > capacity, s.head < s.order.count {
                s.byInode[s.order[s.head]] = nil
                s.head += 1
            }
            if s.head > capacity {
                s.order.removeFirst(s.head)
                s.head = 0
                s.order = s.order.filter { s.byInode[$0] != nil }
            }
        }
    }

    /// The capabilities for `inodes` this wallet holds (the service one for a server).
    public func capabilities(for inodes: some Sequence<UInt64>) -> [Capability] {
        if let service { return [service] }
        return state.withLock { s in
            var seen: Set<UInt64> = []
            var out: [Capability] = []
            for i in inodes where seen.insert(i).inserted {
                if let c = s.byInode[i] { out.append(c) }
            }
            return out
        }
    }

    public func capability(for inode: UInt64) -> Capability? { capabilities(for: [inode]).first }

    public var count: Int { state.withLock { $0.byInode.count } }
}
