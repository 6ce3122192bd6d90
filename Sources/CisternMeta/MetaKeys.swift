import CisternCore

/// The metadata service's keys in the transactional KV. Numbers are big-endian so
/// keys sort numerically; a directory's entries share a prefix and sort by name.
enum MetaKeys {
    static func inode(_ id: InodeID) -> [UInt8] { Array("i/".utf8) + KeyCoding.bigEndian(id.rawValue) }
    static func dentryPrefix(_ dir: InodeID) -> [UInt8] { Array("d/".utf8) + KeyCoding.bigEndian(dir.rawValue) + [UInt8(ascii: "/")] }
    static func dentry(_ dir: InodeID, _ name: String) -> [UInt8] { dentryPrefix(dir) + Array(name.utf8) }
    static func session(_ file: InodeID, _ session: UInt64) -> [UInt8] { Array("s/".utf8) + KeyCoding.bigEndian(file.rawValue) + KeyCoding.bigEndian(session) }
    static func sessionPrefix(_ file: InodeID) -> [UInt8] { Array("s/".utf8) + KeyCoding.bigEndian(file.rawValue) }
    static let sessionsPrefix = Array("s/".utf8)
    static func idempotency(_ client: UInt64, _ request: UInt64) -> [UInt8] { Array("x/".utf8) + KeyCoding.bigEndian(client) + KeyCoding.bigEndian(request) }
    /// The same records by the time they were written, so the oldest expire first.
    static func idempotencyByTime(_ nanoseconds: UInt64, _ client: UInt64, _ request: UInt64) -> [UInt8] {
        idempotencyByTimePrefix + KeyCoding.bigEndian(nanoseconds) + KeyCoding.bigEndian(client) + KeyCoding.bigEndian(request)
    }
    static let idempotencyByTimePrefix = Array("t/".utf8)
    /// When a client last said it is alive (its write sessions stay open while it does).
    static func clientAlive(_ client: UInt64) -> [UInt8] { Array("l/".utf8) + KeyCoding.bigEndian(client) }
    /// Which metadata server runs the background work, until when.
    static let maintenanceLease = Array("b/maintenance".utf8)
    /// Removed files whose chunks wait for garbage collection.
    static func garbage(_ id: InodeID) -> [UInt8] { Array("g/".utf8) + KeyCoding.bigEndian(id.rawValue) }
    static let garbagePrefix = Array("g/".utf8)
    static let nextInode = Array("n/next-inode".utf8)
    /// Per-directory round-robin position for chain allocation.
    static func chainCursor(_ dir: InodeID) -> [UInt8] { Array("c/".utf8) + KeyCoding.bigEndian(dir.rawValue) }
}
