import CisternCore
import CisternWire

/// A storage target: one directory on one disk of one storage node.
public struct TargetID: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: TargetID, b: TargetID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "target#\(rawValue)" }
    public func encode(to writer: inout WireWriter) { writer.writeVarint(rawValue) }
    public init(from reader: inout WireReader) throws(WireError) { rawValue = try reader.readVarint("TargetID") }
}

/// A replication chain of targets.
public struct ChainID: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: ChainID, b: ChainID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "chain#\(rawValue)" }
    public func encode(to writer: inout WireWriter) { writer.writeVarint(UInt64(rawValue)) }
    public init(from reader: inout WireReader) throws(WireError) { rawValue = try UInt32(from: &reader) }
}

/// A target's state as published to everyone with the chain (3FS's public states).
public enum PublicState: UInt8, Sendable, CaseIterable, WireEnum, CustomStringConvertible {
    /// Alive and serving: reads and writes.
    case serving = 1
    /// Alive, data recovery in progress: receives writes, serves no reads.
    case syncing = 2
    /// Alive, recovery not started: neither reads nor writes.
    case waiting = 3
    /// Down, and it was the last serving target: it holds the latest data.
    case lastsrv = 4
    /// Down, or its medium failed.
    case offline = 5

    public var description: String {
        switch self {
        case .serving: return "SERVING"
        case .syncing: return "SYNCING"
        case .waiting: return "WAITING"
        case .lastsrv: return "LASTSRV"
        case .offline: return "OFFLINE"
        }
    }

    /// Whether reads may be sent to a target in this state.
    public var servesReads: Bool { self == .serving }
    /// Whether writes are forwarded to a target in this state.
    public var receivesWrites: Bool { self == .serving || self == .syncing }

}

/// A target's state as its storage node reports it in heartbeats (3FS's local states).
public enum LocalState: UInt8, Sendable, CaseIterable, WireEnum, CustomStringConvertible {
    /// Alive and holding every committed write.
    case upToDate = 1
    /// Alive but not (yet) up to date: syncing or waiting.
    case online = 2
    /// Down, or its medium failed.
    case offline = 3

    public var description: String {
        switch self {
        case .upToDate: return "UPTODATE"
        case .online: return "ONLINE"
        case .offline: return "OFFLINE"
        }
    }

}

/// One member of a chain, in chain order.
public struct ChainTarget: Hashable, Sendable, WireCodable, CustomStringConvertible {
    public var target: TargetID
    public var state: PublicState
    public init(_ target: TargetID, _ state: PublicState) {
        self.target = target
        self.state = state
    }
    public var description: String { "\(target.rawValue):\(state)" }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(target)
            w.write(state)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (target, state) = try reader.readMessage("ChainTarget") { r throws(WireError) in (try r.read(TargetID.self), try r.read(PublicState.self)) }
    }
}

/// A chain: its targets in order (head first), and a version that increases on
/// every change. Writes enter at the first target that receives writes (the head)
/// and commit at the last (the tail).
public struct Chain: Hashable, Sendable, WireCodable, CustomStringConvertible {
    public var id: ChainID
    public var version: UInt64
    public var targets: [ChainTarget]

    public init(id: ChainID, version: UInt64, targets: [ChainTarget]) {
        self.id = id
        self.version = version
        self.targets = targets
    }

    /// The head: the first serving target, if any.
    public var head: TargetID? { targets.first { $0.state == .serving }?.target }
    public var servingTargets: [TargetID] { targets.filter { $0.state == .serving }.map(\.target) }

    public var description: String { "\(id)@v\(version)[\(targets.map(\.description).joined(separator: ","))]" }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(id)
            w.writeVarint(version)
            w.write(targets)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (id, version, targets) = try reader.readMessage("Chain") { r throws(WireError) in
            (try r.read(ChainID.self), try r.readVarint("chain version"), try r.read([ChainTarget].self))
        }
    }
}

/// A versioned list of chains that files stripe across.
public struct ChainTable: Hashable, Sendable, WireCodable {
    public var id: UInt32
    public var version: UInt32
    public var chains: [ChainID]
    public init(id: UInt32, version: UInt32, chains: [ChainID]) {
        self.id = id
        self.version = version
        self.chains = chains
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(id)
            w.write(version)
            w.write(chains)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (id, version, chains) = try reader.readMessage("ChainTable") { r throws(WireError) in
            (try r.read(UInt32.self), try r.read(UInt32.self), try r.read([ChainID].self))
        }
    }
}

extension Chain {
    /// Targets that receive writes (SERVING, then SYNCING), in chain order.
    public var writeTargets: [ChainTarget] { targets.filter { $0.state.receivesWrites } }

    /// The target after `target` among those receiving writes, if any.
    public func successor(of target: TargetID) -> ChainTarget? {
        let writers = writeTargets
        guard let i = writers.firstIndex(where: { $0.target == target }), i + 1 < writers.count else { return nil }
        return writers[i + 1]
    }

    public func state(of target: TargetID) -> PublicState? { targets.first { $0.target == target }?.state }
}
