import CisternCore

/// The behavior every `Disk` implementation must show. Each case runs on a fresh disk
/// from the harness; the suite never calls `finish()` (the caller does).
///
/// Runs inside the simulator too: it takes time, sleeps and spawns only through
/// `harness.runtime`, does not depend on hash ordering, and moves at most 4 MiB per
/// operation.
public enum DiskConformance {
    public static func run(_ harness: some DiskHarness) async throws {
        try await writeAndReadBack(harness)
        try await writePastEndLeavesZeros(harness)
        try await readPastEnd(harness)
        try await reopenKeepsData(harness)
        try await openMissing(harness)
        try await invalidPaths(harness)
        try await truncateShrinksAndGrows(harness)
        try await fallocateKeepsContent(harness)
        try await fsyncSucceeds(harness)
        try await removeThenOpen(harness)
        try await listIsSortedAndCurrent(harness)
        try await batchRunsInOrder(harness)
        try await closedHandle(harness)
        try await limits(harness)
        try await largeRoundTrip(harness)
        try await spaceIsReported(harness)
    }

    static func spaceIsReported(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let space = try await disk.space()
        try check(space.totalBytes > 0, "space() reports the device's total size")
        try check(space.freeBytes <= space.totalBytes, "free space (\(space.freeBytes)) is at most the total (\(space.totalBytes))")
    }

    // MARK: - Cases

    static func writeAndReadBack(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("data", create: true)
        try await checkAsync(try await disk.size(file) == 0, "a new file is empty")
        let bytes = pattern(1, count: 1000)
        try await disk.write(file, offset: 0, bytes)
        try await checkAsync(try await disk.read(file, offset: 0, length: 1000) == bytes, "read returns what was written")
        try await checkAsync(try await disk.size(file) == 1000, "size is 1000 after writing 1000 bytes")
        // Overwrite in the middle, then read a window across both writes.
        let patch = [UInt8](repeating: 0xAA, count: 100)
        try await disk.write(file, offset: 450, patch)
        var expected = bytes
        expected.replaceSubrange(450..<550, with: patch)
        try await checkAsync(try await disk.read(file, offset: 0, length: 1000) == expected, "an overwrite replaces only its range")
        try await checkAsync(
            try await disk.read(file, offset: 400, length: 200) == Array(expected[400..<600]),
            "a read at an offset returns that window")
        try await checkAsync(try await disk.size(file) == 1000, "an overwrite inside the file keeps its size")
        await disk.close(file)
    }

    static func writePastEndLeavesZeros(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("sparse", create: true)
        let offset: UInt64 = 1 << 20
        let bytes = pattern(2, count: 333)
        try await disk.write(file, offset: offset, bytes)
        try await checkAsync(try await disk.size(file) == offset + 333, "a write at 1 MiB makes the file 1 MiB + 333 bytes")
        let head = try await disk.read(file, offset: 0, length: Int(offset))
        try check(head.count == Int(offset), "the bytes before the write read back in full (got \(head.count))")
        try check(head.allSatisfy { $0 == 0 }, "the bytes before a write past the end are zeros")
        try await checkAsync(try await disk.read(file, offset: offset, length: 333) == bytes, "the bytes written past the end read back")
        await disk.close(file)
    }

    static func readPastEnd(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("short", create: true)
        let bytes = pattern(3, count: 100)
        try await disk.write(file, offset: 0, bytes)
        let tail = try await disk.read(file, offset: 90, length: 50)
        try check(tail == Array(bytes[90..<100]), "a read across the end returns the 10 available bytes (got \(tail.count))")
        try await checkAsync(try await disk.read(file, offset: 100, length: 10).isEmpty, "a read at the end returns nothing")
        try await checkAsync(try await disk.read(file, offset: 5000, length: 10).isEmpty, "a read past the end returns nothing")
        try await checkAsync(try await disk.read(file, offset: 0, length: 0).isEmpty, "a read of 0 bytes returns nothing")
        await disk.close(file)
    }

    static func reopenKeepsData(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let bytes = pattern(4, count: 4096)
        let first = try await disk.open("keep", create: true)
        try await disk.write(first, offset: 0, bytes)
        try await disk.fsync(first)
        await disk.close(first)
        let again = try await disk.open("keep", create: false)
        try await checkAsync(try await disk.read(again, offset: 0, length: 4096) == bytes, "a reopened file has its data")
        await disk.close(again)
        let created = try await disk.open("keep", create: true)
        try await checkAsync(try await disk.size(created) == 4096, "open(create: true) of an existing file does not truncate it")
        try await checkAsync(try await disk.read(created, offset: 0, length: 4096) == bytes, "open(create: true) keeps the data")
        // Two handles on one file see each other's writes.
        let other = try await disk.open("keep", create: false)
        try await disk.write(created, offset: 0, [9, 9, 9])
        try await checkAsync(try await disk.read(other, offset: 0, length: 3) == [9, 9, 9], "a second handle sees the first's writes")
        await disk.close(created)
        await disk.close(other)
    }

    static func openMissing(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        try await checkThrows("open(create: false) of a missing file") {
            try await disk.open("missing", create: false)
        } matches: { isDiskError($0) { if case .notFound = $0 { return true } else { return false } } }
        try await checkThrows("open(create: false) of a missing file in a missing directory") {
            try await disk.open("nodir/missing", create: false)
        } matches: { isDiskError($0) { if case .notFound = $0 { return true } else { return false } } }
    }

    static func invalidPaths(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        for path in ["", "/abs", "a/../b", "..", "./a", "a//b", "a/"] {
            try await checkThrows("open('\(path)')") {
                try await disk.open(path, create: true)
            } matches: { isDiskError($0) { if case .invalidPath = $0 { return true } else { return false } } }
            try await checkThrows("remove('\(path)')") {
                try await disk.remove(path)
            } matches: { isDiskError($0) { if case .invalidPath = $0 { return true } else { return false } } }
        }
        try await checkAsync(try await disk.list().isEmpty, "invalid paths create nothing")
    }

    static func truncateShrinksAndGrows(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("trunc", create: true)
        let bytes = pattern(5, count: 100)
        try await disk.write(file, offset: 0, bytes)
        try await disk.truncate(file, length: 40)
        try await checkAsync(try await disk.size(file) == 40, "truncate to 40 shrinks the file to 40 bytes")
        try await checkAsync(try await disk.read(file, offset: 0, length: 100) == Array(bytes[0..<40]), "truncate keeps the prefix")
        try await disk.truncate(file, length: 80)
        try await checkAsync(try await disk.size(file) == 80, "truncate to 80 grows the file to 80 bytes")
        let grown = try await disk.read(file, offset: 0, length: 100)
        try check(grown.count == 80, "a grown file reads back 80 bytes (got \(grown.count))")
        try check(Array(grown[0..<40]) == Array(bytes[0..<40]), "growing keeps the prefix")
        try check(grown[40..<80].allSatisfy { $0 == 0 }, "growing fills with zeros, not the truncated bytes")
        try await disk.truncate(file, length: 0)
        try await checkAsync(try await disk.size(file) == 0, "truncate to 0 empties the file")
        await disk.close(file)
    }

    static func fallocateKeepsContent(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("alloc", create: true)
        let bytes = pattern(6, count: 100)
        try await disk.write(file, offset: 0, bytes)
        try await disk.fallocate(file, offset: 0, length: 64 << 10)
        try await checkAsync(try await disk.read(file, offset: 0, length: 200) == bytes, "fallocate does not change the content")
        try await checkAsync(try await disk.size(file) == 100, "fallocate does not change the size")
        // Writes into the reserved range work as usual.
        let more = pattern(7, count: 1000)
        try await disk.write(file, offset: 100, more)
        try await checkAsync(try await disk.read(file, offset: 0, length: 1100) == bytes + more, "writes into a reserved range read back")
        try await disk.fallocate(file, offset: 0, length: 0)
        await disk.close(file)
    }

    static func fsyncSucceeds(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("sync", create: true)
        try await disk.fsync(file)
        try await disk.write(file, offset: 0, pattern(8, count: 512))
        try await disk.fsync(file)
        try await disk.fsync(file)
        try await checkAsync(try await disk.read(file, offset: 0, length: 512) == pattern(8, count: 512), "fsync keeps the data")
        await disk.close(file)
    }

    static func removeThenOpen(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("gone", create: true)
        try await disk.write(file, offset: 0, [1, 2, 3])
        await disk.close(file)
        try await disk.remove("gone")
        try await checkThrows("open(create: false) after remove") {
            try await disk.open("gone", create: false)
        } matches: { isDiskError($0) { if case .notFound = $0 { return true } else { return false } } }
        try await checkThrows("remove of a removed file") {
            try await disk.remove("gone")
        } matches: { isDiskError($0) { if case .notFound = $0 { return true } else { return false } } }
        let fresh = try await disk.open("gone", create: true)
        try await checkAsync(try await disk.size(fresh) == 0, "a file created after remove starts empty")
        await disk.close(fresh)
    }

    static func listIsSortedAndCurrent(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        try await checkAsync(try await disk.list().isEmpty, "a new disk lists nothing")
        let names = ["m", "b", "dir/x", "a", "z9", "dir/a", "b2"]
        for name in names {
            let file = try await disk.open(name, create: true)
            await disk.close(file)
        }
        let listed = try await disk.list()
        try check(listed == names.sorted(), "list is every file, sorted: got \(listed)")
        try await disk.remove("b")
        try await disk.remove("dir/x")
        let after = try await disk.list()
        let expected = names.filter { $0 != "b" && $0 != "dir/x" }.sorted()
        try check(after == expected, "list reflects removes: got \(after), expected \(expected)")
    }

    static func batchRunsInOrder(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let a = try await disk.open("batch-a", create: true)
        let b = try await disk.open("batch-b", create: true)
        var ops: [DiskOp] = []
        var expected: [DiskCompletion] = []
        // 16 rounds of: write A, read A back, write B, read B back; the reads of a
        // region written twice see the second write.
        for round in 0..<16 {
            let region = UInt64(round % 8) * 64
            let bytesA = pattern(UInt64(100 + round), count: 64)
            let bytesB = pattern(UInt64(200 + round), count: 64)
            ops.append(.write(a, offset: region, bytes: bytesA))
            expected.append(.done)
            ops.append(.read(a, offset: region, length: 64))
            expected.append(.read(bytesA))
            ops.append(.write(b, offset: region, bytes: bytesB))
            expected.append(.done)
            ops.append(.read(b, offset: region, length: 64))
            expected.append(.read(bytesB))
        }
        try check(ops.count == 64, "the batch has 64 operations")
        let results = await disk.submit(ops)
        try check(results.count == 64, "a batch returns one result per operation (got \(results.count))")
        for (index, (result, want)) in zip(results, expected).enumerated() {
            switch result {
            case .success(let got): try check(got == want, "batch operation \(index): got \(got), expected \(want)")
            case .failure(let error): throw ConformanceFailure(message: "batch operation \(index) failed: \(error)", file: #fileID, line: #line)
            }
        }
        try await checkAsync(try await disk.size(a) == 512, "batch writes leave file A at 512 bytes")
        let finalA = try await disk.read(a, offset: 0, length: 512)
        var wantA: [UInt8] = []
        for region in 0..<8 { wantA += pattern(UInt64(100 + 8 + region), count: 64) }
        try check(finalA == wantA, "file A holds the last write to each region")
        try await checkAsync(await disk.submit([]).isEmpty, "an empty batch returns no results")
        await disk.close(a)
        await disk.close(b)
    }

    static func closedHandle(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("closed", create: true)
        try await disk.write(file, offset: 0, [1, 2, 3])
        let live = try await disk.open("live", create: true)
        await disk.close(file)
        let isBadHandle: (any Error) -> Bool = { isDiskError($0) { if case .badHandle = $0 { return true } else { return false } } }
        try await checkThrows("read on a closed handle", { try await disk.read(file, offset: 0, length: 3) }, matches: isBadHandle)
        try await checkThrows("write on a closed handle", { try await disk.write(file, offset: 0, [4]) }, matches: isBadHandle)
        try await checkThrows("fsync on a closed handle", { try await disk.fsync(file) }, matches: isBadHandle)
        try await checkThrows("size on a closed handle", { try await disk.size(file) }, matches: isBadHandle)
        let never = DiskFile(id: 999_999, path: "closed")
        try await checkThrows("read on a handle never opened", { try await disk.read(never, offset: 0, length: 3) }, matches: isBadHandle)
        // In a batch, only the operations on the bad handle fail.
        let results = await disk.submit([
            .write(live, offset: 0, bytes: [7]), .read(file, offset: 0, length: 1), .read(live, offset: 0, length: 1),
        ])
        try check(results.count == 3, "the batch returns 3 results")
        try check(results[0] == .success(.done), "the write on the open handle succeeds: \(results[0])")
        if case .failure(let error) = results[1], case .badHandle = error {} else {
            throw ConformanceFailure(message: "the read on the closed handle gives badHandle: \(results[1])", file: #fileID, line: #line)
        }
        try check(results[2] == .success(.read([7])), "the read on the open handle sees the write: \(results[2])")
        await disk.close(live)
        // The file itself is still there.
        let reopened = try await disk.open("closed", create: false)
        try await checkAsync(try await disk.read(reopened, offset: 0, length: 3) == [1, 2, 3], "closing a handle keeps the file")
        await disk.close(reopened)
    }

    static func limits(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("limits", create: true)
        let isTooLarge: (any Error) -> Bool = { isDiskError($0) { if case .tooLarge = $0 { return true } else { return false } } }
        try await checkThrows("a read over ioBytesMax", {
            try await disk.read(file, offset: 0, length: DiskLimits.ioBytesMax + 1)
        }, matches: isTooLarge)
        let ops = [DiskOp](repeating: .fsync(file), count: DiskLimits.batchOpsMax + 1)
        let results = await disk.submit(ops)
        try check(results.count == ops.count, "an oversized batch still returns one result per operation")
        for result in results {
            guard case .failure(let error) = result, case .tooLarge = error else {
                throw ConformanceFailure(message: "an oversized batch fails with tooLarge: \(result)", file: #fileID, line: #line)
            }
        }
        await disk.close(file)
    }

    static func largeRoundTrip(_ harness: some DiskHarness) async throws {
        let disk = try await harness.makeDisk()
        let file = try await disk.open("large", create: true)
        let count = 4 << 20
        let bytes = pattern(9, count: count)
        try await disk.write(file, offset: 0, bytes)
        try await disk.fsync(file)
        try await checkAsync(try await disk.size(file) == UInt64(count), "a 4 MiB write makes a 4 MiB file")
        let back = try await disk.read(file, offset: 0, length: count)
        try check(back.count == count, "a 4 MiB read returns 4 MiB (got \(back.count))")
        try check(back == bytes, "a 4 MiB write reads back byte for byte")
        await disk.close(file)
    }

    // MARK: - Helpers

    /// `check` for conditions that await (`check`'s autoclosure cannot).
    static func checkAsync(
        _ condition: @autoclosure () async throws -> Bool, _ message: @autoclosure () -> String,
        file: String = #fileID, line: Int = #line
    ) async throws {
        let holds = try await condition()
        try check(holds, message(), file: file, line: line)
    }

    /// `count` bytes that differ by `seed` and by position (and are rarely zero).
    static func pattern(_ seed: UInt64, count: Int) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state >> 24)
        }
    }

    static func isDiskError(_ error: any Error, _ predicate: (DiskError) -> Bool) -> Bool {
        guard let error = error as? DiskError else { return false }
        return predicate(error)
    }
}
