/// One registered memory region: the byte range `[address, address + length)` and the
/// keys the adapter gave it (`lkey` for local work requests, `rkey` for peers'
/// one-sided reads and writes). For a peer's region only `rkey` is meaningful.
public struct MemoryRegion: Hashable, Sendable, CustomStringConvertible {
    /// The first byte's virtual address.
    public var address: UInt64
    /// The length in bytes.
    public var length: UInt64
    /// The key local work requests name the region by.
    public var lkey: UInt32
    /// The key peers name the region by in RDMA READ and WRITE.
    public var rkey: UInt32

    /// A region of `length` bytes at `address` with keys `lkey` and `rkey`.
    public init(address: UInt64, length: UInt64, lkey: UInt32, rkey: UInt32) {
        self.address = address
        self.length = length
        self.lkey = lkey
        self.rkey = rkey
    }

    /// One past the last byte, saturating at `UInt64.max` (a region in a
    /// `MemoryRegionTable` never wraps, so there it is exact).
    public var end: UInt64 {
        let (sum, overflow) = address.addingReportingOverflow(length)
        return overflow ? UInt64.max : sum
    }

    /// True when `[address, address + length)` lies inside this region. A zero-length
    /// range is contained when its address is inside the region.
    public func contains(address start: UInt64, length count: UInt64) -> Bool {
        guard start >= address, start < end else { return false }
        let (last, overflow) = start.addingReportingOverflow(count)
        return !overflow && last <= end
    }

    /// The region's address, length and keys in hex.
    public var description: String {
        "region 0x\(String(address, radix: 16))+\(length) (lkey 0x\(String(lkey, radix: 16)), rkey 0x\(String(rkey, radix: 16)))"
    }
}

/// Why a memory-region registration, lookup or removal was refused.
public enum MemoryRegionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A region of zero bytes was offered for registration.
    case emptyRegion(address: UInt64)
    /// `address + length` does not fit in 64 bits.
    case wrapsAddressSpace(address: UInt64, length: UInt64)
    /// The new region shares bytes with a registered one.
    case overlaps(new: MemoryRegion, existing: MemoryRegion)
    /// The new region's rkey is already used by a registered region.
    case duplicateRemoteKey(new: MemoryRegion, existing: MemoryRegion)
    /// No registered region holds the access's first byte.
    case notRegistered(address: UInt64, length: UInt64)
    /// The access starts inside `region` but runs past its end (or wraps).
    case outOfRange(address: UInt64, length: UInt64, region: MemoryRegion)
    /// No registered region has this rkey.
    case unknownRemoteKey(UInt32)
    /// No registered region starts at `address` (removal names a region by its start).
    case noRegionStartsAt(address: UInt64)

    /// The refusal in words, naming the addresses and regions involved.
    public var description: String {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch self {
        case .emptyRegion(let address):
            return "cannot register an empty memory region at \(hex(address))"
        case .wrapsAddressSpace(let address, let length):
            return "memory region at \(hex(address)) of \(length) bytes wraps the address space"
        case .overlaps(let new, let existing):
            return "\(new) overlaps the registered \(existing)"
        case .duplicateRemoteKey(let new, let existing):
            return "\(new) reuses the rkey of the registered \(existing)"
        case .notRegistered(let address, let length):
            return "no registered memory region holds \(length) byte(s) at \(hex(address))"
        case .outOfRange(let address, let length, let region):
            return "access of \(length) byte(s) at \(hex(address)) runs past the end of \(region) at \(hex(region.end))"
        case .unknownRemoteKey(let rkey):
            return "no registered memory region has rkey 0x\(String(rkey, radix: 16))"
        case .noRegionStartsAt(let address):
            return "no registered memory region starts at \(hex(address))"
        }
    }
}

/// The memory regions registered with one protection domain (or advertised by one
/// peer), as a plain value: it checks every registration and access without a device.
///
/// Promises:
/// - Regions never overlap and never wrap the address space; two regions never share
///   an rkey. A registration that would break this is refused with the precise
///   `MemoryRegionError` and leaves the table unchanged.
/// - `region(covering:length:)` returns the one region holding the whole access, or
///   says whether no region holds its start (`notRegistered`) or the access runs past
///   the end of the region holding its start (`outOfRange`).
/// - Lookups take O(log n) by address.
public struct MemoryRegionTable: Sendable, Equatable {
    /// Registered regions, sorted by address.
    public private(set) var regions: [MemoryRegion] = []

    /// An empty table.
    public init() {}

    /// The number of registered regions.
    public var count: Int { regions.count }
    /// True when no region is registered.
    public var isEmpty: Bool { regions.isEmpty }
    /// The bytes all registered regions span together.
    public var totalBytes: UInt64 { regions.reduce(0) { $0 &+ $1.length } }

    /// Registers `region`. Throws `emptyRegion`, `wrapsAddressSpace`, `overlaps` (naming
    /// the registered region it collides with) or `duplicateRemoteKey`.
    public mutating func insert(_ region: MemoryRegion) throws(MemoryRegionError) {
        guard region.length > 0 else { throw .emptyRegion(address: region.address) }
        let (_, wraps) = region.address.addingReportingOverflow(region.length)
        guard !wraps else { throw .wrapsAddressSpace(address: region.address, length: region.length) }
        let index = firstIndex(startingAfter: region.address)
        if index > 0, regions[index - 1].end > region.address {
            throw .overlaps(new: region, existing: regions[index - 1])
        }
        if index < regions.count, regions[index].address < region.end {
            throw .overlaps(new: region, existing: regions[index])
        }
        if let same = regions.first(where: { $0.rkey == region.rkey }) {
            throw .duplicateRemoteKey(new: region, existing: same)
        }
        regions.insert(region, at: index)
    }

    /// The region holding all of `[address, address + length)`. Throws `notRegistered`
    /// when no region holds `address`, `outOfRange` when the access runs past the end
    /// of the region that does.
    public func region(covering address: UInt64, length: UInt64) throws(MemoryRegionError) -> MemoryRegion {
        let index = firstIndex(startingAfter: address)
        guard index > 0, regions[index - 1].end > address else {
            throw .notRegistered(address: address, length: length)
        }
        let region = regions[index - 1]
        guard region.contains(address: address, length: length) else {
            throw .outOfRange(address: address, length: length, region: region)
        }
        return region
    }

    /// The region registered with `rkey`, if any.
    public func region(rkey: UInt32) -> MemoryRegion? {
        regions.first { $0.rkey == rkey }
    }

    /// Checks a peer's one-sided access: the region with `rkey` must hold all of
    /// `[address, address + length)`. Throws `unknownRemoteKey`, or `outOfRange` when
    /// the access is not inside that region.
    @discardableResult
    public func validateRemoteAccess(rkey: UInt32, address: UInt64, length: UInt64) throws(MemoryRegionError) -> MemoryRegion {
        guard let region = region(rkey: rkey) else { throw .unknownRemoteKey(rkey) }
        guard region.contains(address: address, length: length) else {
            throw .outOfRange(address: address, length: length, region: region)
        }
        return region
    }

    /// Removes (frees) the region that starts at `address` and returns it. Throws
    /// `noRegionStartsAt` when no region starts there.
    @discardableResult
    public mutating func remove(address: UInt64) throws(MemoryRegionError) -> MemoryRegion {
        let index = firstIndex(startingAfter: address)
        guard index > 0, regions[index - 1].address == address else { throw .noRegionStartsAt(address: address) }
        return regions.remove(at: index - 1)
    }

    /// The index of the first region whose address is greater than `address`.
    private func firstIndex(startingAfter address: UInt64) -> Int {
        var low = 0
        var high = regions.count
        while low < high {
            let mid = (low + high) / 2
            if regions[mid].address <= address { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
