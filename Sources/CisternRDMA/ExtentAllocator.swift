/// A byte range inside a buffer: `length` bytes from `offset`.
public struct BufferExtent: Hashable, Sendable, CustomStringConvertible {
    /// The first byte's offset from the buffer's start.
    public var offset: Int
    /// The length in bytes.
    public var length: Int

    /// The extent of `length` bytes at `offset`.
    public init(offset: Int, length: Int) {
        self.offset = offset
        self.length = length
    }

    /// One past the last byte.
    public var end: Int { offset + length }

    /// The extent as a half-open range, for example "[64, 164)".
    public var description: String { "[\(offset), \(end))" }
}

/// Why `ExtentAllocator.free` refused an extent.
public enum ExtentAllocatorError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No allocation starts at the extent's offset (never allocated, or freed already).
    case notAllocated(BufferExtent)
    /// An allocation starts there but with another length.
    case lengthMismatch(BufferExtent, allocatedLength: Int)

    /// What was wrong with the extent, in words.
    public var description: String {
        switch self {
        case .notAllocated(let extent): return "extent \(extent) is not allocated (freed twice?)"
        case .lengthMismatch(let extent, let length): return "extent \(extent) was allocated with \(length) bytes"
        }
    }
}

/// Hands out byte ranges of a fixed-size buffer (a registered staging buffer): first
/// fit, every range starting on an `alignment` boundary, freed ranges merged with their
/// free neighbours. A plain value, so it is checked without a device.
///
/// Promises: allocated extents never overlap and lie inside `[0, capacity)`;
/// `allocate` returns nil (never traps) when no free range fits; `free` refuses an
/// extent that is not currently allocated with exactly that length.
public struct ExtentAllocator: Sendable, Equatable {
    /// The buffer's size in bytes.
    public let capacity: Int
    /// Every allocation starts at a multiple of this (a power of two).
    public let alignment: Int
    /// Free ranges, sorted by offset, never adjacent (adjacent ones are merged).
    private var free: [BufferExtent]
    /// Allocation start -> length requested.
    private var allocated: [Int: Int] = [:]

    /// An allocator of a `capacity`-byte buffer; `alignment` is rounded up to a power
    /// of two (at least 1). A negative capacity counts as 0.
    public init(capacity: Int, alignment: Int = 64) {
        let cap = max(capacity, 0)
        var align = 1
        while align < alignment, align < (1 << 30) { align <<= 1 }
        self.capacity = cap
        self.alignment = align
        self.free = cap > 0 ? [BufferExtent(offset: 0, length: cap)] : []
    }

    /// Bytes not allocated (including alignment padding of future allocations).
    public var freeBytes: Int { free.reduce(0) { $0 + $1.length } }
    /// The longest free range.
    public var largestFreeExtent: Int { free.map(\.length).max() ?? 0 }
    /// Extents allocated now.
    public var allocatedCount: Int { allocated.count }

    /// A free extent of `length` bytes (at least 1), or nil when none fits.
    public mutating func allocate(_ length: Int) -> BufferExtent? {
        guard length > 0, length <= capacity else { return nil }
        for index in free.indices {
            let start = free[index].offset
            let reserved = min(rounded(length), capacity - start)
            guard reserved >= length, free[index].length >= reserved else { continue }
            if free[index].length == reserved {
                free.remove(at: index)
            } else {
                free[index].offset += reserved
                free[index].length -= reserved
            }
            allocated[start] = length
            return BufferExtent(offset: start, length: length)
        }
        return nil
    }

    /// Returns `extent` (as `allocate` gave it) to the free ranges.
    public mutating func free(_ extent: BufferExtent) throws(ExtentAllocatorError) {
        guard let length = allocated[extent.offset] else { throw .notAllocated(extent) }
        guard length == extent.length else { throw .lengthMismatch(extent, allocatedLength: length) }
        allocated[extent.offset] = nil
        var range = BufferExtent(offset: extent.offset, length: min(rounded(length), capacity - extent.offset))
        var index = 0
        while index < free.count, free[index].offset < range.offset { index += 1 }
        if index < free.count, free[index].offset == range.end {
            range.length += free[index].length
            free.remove(at: index)
        }
        if index > 0, free[index - 1].end == range.offset {
            free[index - 1].length += range.length
        } else {
            free.insert(range, at: index)
        }
    }

    /// True when `extent` is allocated now, with exactly that length.
    public func isAllocated(_ extent: BufferExtent) -> Bool {
        allocated[extent.offset] == extent.length
    }

    /// `length` rounded up to the alignment (the bytes an allocation reserves, except
    /// at the end of an unaligned capacity, where it reserves the rest).
    private func rounded(_ length: Int) -> Int {
        let (sum, overflow) = length.addingReportingOverflow(alignment - 1)
        guard !overflow else { return Int.max }
        return sum & ~(alignment - 1)
    }
}
