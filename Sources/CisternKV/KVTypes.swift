import CisternCore
import CisternMeta
import CisternRouting
import CisternWire

/// Limits of the KV API; requests beyond them are refused with an error naming the limit.
public enum KVCacheLimits {
    /// Keys in one batched request.
    public static let batchKeysMax = 1_024
    /// Bytes of one key (inference engines use hex digests of 32-64 characters).
    public static let keyBytesMax = 1_024
    /// Bytes of a namespace name.
    public static let namespaceBytesMax = 64
    /// Page size bounds: a page is one chunk of its namespace's files.
    public static let pageBytesMin = 512
    public static let pageBytesMax = 64 << 20
    /// Page slots of one namespace.
    public static let capacityPagesMax: UInt64 = 1 << 32
    /// Data files of one namespace.
    public static let filesMax = 64
    /// How long a put may take between reserve and confirm; an abandoned reservation
    /// returns to the free list after this.
    public static let reservationNanoseconds: UInt64 = 120_000_000_000
}

/// Why a KV request was refused or could not finish. Each names the fix.
public enum KVCacheError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidNamespace(String, reason: String)
    case noSuchNamespace(String)
    case namespaceMismatch(String, existing: String)
    case invalidKey(String, reason: String)
    case batchTooLarge(count: Int, limit: Int)
    case pageTooLarge(key: String, bytes: Int, pageBytes: Int)
    case invalidConfig(String)
    case unavailable(String)
    /// The index's store is full; retrying does not help until space is freed.
    case noSpace(String)
    /// The tenant registry refused (unknown token, quota, ...).
    case tenant(TenantError)

    public var description: String {
        switch self {
        case .invalidNamespace(let n, let r): return "invalid namespace name '\(n)': \(r)"
        case .noSuchNamespace(let n): return "no KV namespace '\(n)'; create it first (createNamespace / cistern kv create)"
        case .namespaceMismatch(let n, let e): return "KV namespace '\(n)' already exists with a different shape (\(e)); use that shape or another name"
        case .invalidKey(let k, let r): return "invalid key '\(k.prefix(80))': \(r)"
        case .batchTooLarge(let c, let l): return "a batch of \(c) keys exceeds the limit of \(l); split it"
        case .pageTooLarge(let k, let b, let p): return "page for key '\(k.prefix(80))' has \(b) bytes, more than the namespace's page size of \(p) bytes"
        case .invalidConfig(let d): return "invalid KV namespace configuration: \(d)"
        case .unavailable(let d): return "KV index unavailable: \(d)"
        case .noSpace(let d): return "KV index store out of space: \(d)"
        case .tenant(let e): return e.description
        }
    }

    /// Refuses a bad namespace name with the rule it breaks.
    public static func check(namespace name: String) throws(KVCacheError) {
        if name.isEmpty { throw .invalidNamespace(name, reason: "empty") }
        if name.utf8.count > KVCacheLimits.namespaceBytesMax { throw .invalidNamespace(name, reason: "longer than \(KVCacheLimits.namespaceBytesMax) bytes") }
        let ok = name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "-" || $0 == "_" || $0 == "." }
        if !ok || name.hasPrefix(".") { throw .invalidNamespace(name, reason: "use letters, digits, '-', '_' and '.', not starting with '.'") }
    }

    /// Refuses an oversized batch or a bad key.
    public static func check(keys: [String]) throws(KVCacheError) {
        if keys.count > KVCacheLimits.batchKeysMax { throw .batchTooLarge(count: keys.count, limit: KVCacheLimits.batchKeysMax) }
        for k in keys {
            if k.isEmpty { throw .invalidKey(k, reason: "empty") }
            if k.utf8.count > KVCacheLimits.keyBytesMax { throw .invalidKey(k, reason: "longer than \(KVCacheLimits.keyBytesMax) bytes") }
        }
    }
}

/// A page slot of a namespace: slot `s` is chunk `s % slotsPerFile` of data file
/// `s / slotsPerFile`.
public struct PageSlot: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: PageSlot, b: PageSlot) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "slot#\(rawValue)" }
    public func encode(to writer: inout WireWriter) { writer.writeVarint(rawValue) }
    public init(from reader: inout WireReader) throws(WireError) { rawValue = try reader.readVarint("PageSlot") }
}

/// One of a namespace's large data files: its inode and layout (chunk size = page size).
public struct KVDataFile: Hashable, Sendable, WireCodable {
    public var inode: InodeID
    public var layout: Layout
    public init(inode: InodeID, layout: Layout) {
        self.inode = inode
        self.layout = layout
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(inode)
            w.write(layout)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (inode, layout) = try reader.readMessage("KVDataFile") { r throws(WireError) in (try r.read(InodeID.self), try r.read(Layout.self)) }
    }
}

/// A namespace's shape: page size, capacity, and the data files its slots live in.
/// What a KV namespace's put promises once it returns `stored`.
public enum KVDurability: UInt8, Hashable, Sendable, WireEnum, CustomStringConvertible, CaseIterable {
    /// Every replica of the page's chain holds it (memory and page cache) and the index
    /// has confirmed it; data reaches the disks by group commit in the background. A
    /// crash of every replica of a chain at once may lose recent puts: those pages then
    /// read as missing (the engine recomputes them), never as wrong bytes. The default:
    /// a KV cache can always be recomputed.
    case cache = 1
    /// Every replica has fsynced the page (group commit) before the put returns: no
    /// crash loses a stored page.
    case durable = 2

    public var description: String { self == .cache ? "cache" : "durable" }

    public init?(_ text: String) {
        guard let d = Self.allCases.first(where: { $0.description == text }) else { return nil }
        self = d
    }
}

public struct KVNamespaceConfig: Hashable, Sendable, WireCodable, CustomStringConvertible {
    public var name: String
    public var pageBytes: UInt32
    public var capacityPages: UInt64
    public var slotsPerFile: UInt64
    public var files: [KVDataFile]
    /// Added after the first format: a configuration without it is `durable` (what
    /// every namespace was before).
    public var durability: KVDurability

    public init(name: String, pageBytes: UInt32, capacityPages: UInt64, slotsPerFile: UInt64, files: [KVDataFile], durability: KVDurability = .cache) {
        self.name = name
        self.pageBytes = pageBytes
        self.capacityPages = capacityPages
        self.slotsPerFile = slotsPerFile
        self.files = files
        self.durability = durability
    }

    public var description: String { "\(name): \(capacityPages) pages of \(pageBytes) bytes in \(files.count) file(s), \(durability) durability" }

    /// Where slot `slot`'s bytes live: its chunk and chain.
    public func location(of slot: PageSlot) -> (chunk: ChunkID, chain: ChainID)? {
        guard slotsPerFile > 0, slot.rawValue < capacityPages else { return nil }
        let f = Int(slot.rawValue / slotsPerFile)
        guard f < files.count else { return nil }
        let index = slot.rawValue % slotsPerFile
        guard let chain = files[f].layout.chain(ofChunk: index) else { return nil }
        return (ChunkID(inode: files[f].inode.rawValue, index: index), chain)
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeString(name)
            w.write(pageBytes)
            w.writeVarint(capacityPages)
            w.writeVarint(slotsPerFile)
            w.write(files)
            w.write(durability)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("KVNamespaceConfig") { r throws(WireError) in
            KVNamespaceConfig(name: try r.readString(), pageBytes: try r.read(UInt32.self), capacityPages: try r.readVarint(),
                              slotsPerFile: try r.readVarint(), files: try r.read([KVDataFile].self),
                              durability: r.isAtEnd ? .durable : try r.read(KVDurability.self))
        }
    }
}

/// A confirmed page as the index records it: its slot, length and checksum (a reader
/// checks the bytes it got against both), and when it was last read (for LRU).
public struct KVKeyRecord: Hashable, Sendable, WireCodable {
    public var slot: PageSlot
    public var length: UInt32
    public var checksum: UInt32
    public var accessNanoseconds: UInt64
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(slot)
            w.write(length)
            w.write(checksum)
            w.writeVarint(accessNanoseconds)
        }
    }
    public init(slot: PageSlot, length: UInt32, checksum: UInt32, accessNanoseconds: UInt64) {
        self.slot = slot
        self.length = length
        self.checksum = checksum
        self.accessNanoseconds = accessNanoseconds
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("KVKeyRecord") { r throws(WireError) in
            KVKeyRecord(slot: try r.read(PageSlot.self), length: try r.read(UInt32.self), checksum: try r.read(UInt32.self), accessNanoseconds: try r.readVarint())
        }
    }
}

/// A slot in use: reserved by a put in progress (until its confirm or its expiry) or
/// holding a confirmed key. `leaseUntilNanoseconds`: readers may be reading it until
/// then, so it is neither evicted nor reused before.
public struct KVSlotRecord: Hashable, Sendable, WireCodable {
    public enum State: Hashable, Sendable {
        case reserved(key: String, token: UInt64, expiresNanoseconds: UInt64)
        case confirmed(key: String)
    }
    public var state: State
    public var leaseUntilNanoseconds: UInt64

    public init(state: State, leaseUntilNanoseconds: UInt64 = 0) {
        self.state = state
        self.leaseUntilNanoseconds = leaseUntilNanoseconds
    }

    public var key: String {
        switch state {
        case .reserved(let k, _, _), .confirmed(let k): return k
        }
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            switch state {
            case .reserved(let k, let t, let e):
                w.writeVarint(1)
                w.writeString(k)
                w.writeVarint(t)
                w.writeVarint(e)
            case .confirmed(let k):
                w.writeVarint(2)
                w.writeString(k)
            }
            w.writeVarint(leaseUntilNanoseconds)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("KVSlotRecord") { r throws(WireError) -> KVSlotRecord in
            let state: State
            switch try r.readVarint("slot state") {
            case 1: state = .reserved(key: try r.readString(), token: try r.readVarint(), expiresNanoseconds: try r.readVarint())
            case 2: state = .confirmed(key: try r.readString())
            case let tag: throw .unknownTag(type: "KVSlotRecord", tag: tag)
            }
            return KVSlotRecord(state: state, leaseUntilNanoseconds: try r.readVarint())
        }
    }
}

/// Where a found page is, how to check it, and how long the reader's lease on its
/// slot lasts from the moment the index answered.
public struct KVPageLocation: Hashable, Sendable, WireCodable {
    public var slot: PageSlot
    public var length: UInt32
    public var checksum: UInt32
    public var leaseNanoseconds: UInt64
    public init(slot: PageSlot, length: UInt32, checksum: UInt32, leaseNanoseconds: UInt64) {
        self.slot = slot
        self.length = length
        self.checksum = checksum
        self.leaseNanoseconds = leaseNanoseconds
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(slot)
            w.write(length)
            w.write(checksum)
            w.writeVarint(leaseNanoseconds)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (slot, length, checksum, leaseNanoseconds) = try reader.readMessage("KVPageLocation") { r throws(WireError) in
            (try r.read(PageSlot.self), try r.read(UInt32.self), try r.read(UInt32.self), try r.readVarint())
        }
    }
}
