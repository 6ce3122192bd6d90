import Cistern
import CisternFUSE
import CisternMeta
import Glibc
import Testing

@Suite struct FUSEInodeTableTests {
    @Test func lookupsAreCountedAndForgottenAtZeroButNeverTheRoot() {
        var t = FUSEInodeTable()
        t.remember(5, path: "/a")
        t.remember(5, path: "/a")
        #expect(t.lookups(5) == 2 && t.path(5) == "/a")
        t.forget(5, 1)
        #expect(t.path(5) == "/a")
        t.forget(5, 1)
        #expect(t.path(5) == nil && t.count == 1)
        t.forget(FUSEInodeTable.rootInode, 100)
        #expect(t.path(FUSEInodeTable.rootInode) == "/")
    }

    @Test func hardLinksKeepEveryPathUpToTheLimitNewestFirst() {
        var t = FUSEInodeTable()
        for k in 0..<6 { t.remember(9, path: "/l\(k)") }
        #expect(t.path(9) == "/l5")
        t.removed(path: "/l5")
        #expect(t.path(9) == "/l4", "another link still reaches the file")
        for k in 2...4 { t.removed(path: "/l\(k)") }
        #expect(t.path(9) == nil, "only \(FUSEInodeTable.pathsMax) paths are kept")
    }

    @Test func renamingADirectoryMovesEverythingUnderItAndReplacesTheTarget() {
        var t = FUSEInodeTable()
        t.remember(2, path: "/d")
        t.remember(3, path: "/d/f")
        t.remember(4, path: "/d/e/g")
        t.remember(5, path: "/dd")  // a sibling whose name starts the same
        t.remember(6, path: "/x")   // replaced by the rename
        t.renamed(from: "/d", to: "/x")
        #expect(t.path(2) == "/x" && t.path(3) == "/x/f" && t.path(4) == "/x/e/g")
        #expect(t.path(5) == "/dd" && t.path(6) == nil)
        t.removed(path: "/x")
        #expect(t.path(3) == nil && t.path(5) == "/dd")
    }

    @Test func aMountedSubtreeJoinsPathsUnderItsRoot() {
        var t = FUSEInodeTable(rootPath: "/tenants/acme")
        #expect(t.path(FUSEInodeTable.rootInode) == "/tenants/acme")
        #expect(FUSEInodeTable.child("/tenants/acme", "f") == "/tenants/acme/f")
        #expect(FUSEInodeTable.child("/", "f") == "/f")
        t.remember(8, path: "/tenants/acme/f")
        #expect(t.path(8) == "/tenants/acme/f")
    }
}

@Suite struct WriteCoalescerTests {
    /// Replays writes through a coalescer and returns what reached storage: the
    /// flushed ranges and the file's bytes.
    func replay(_ writes: [(UInt64, [UInt8])], chunk: UInt64, limit: Int) -> ([WriteCoalescer.Flush], [UInt8]) {
        var c = WriteCoalescer(chunkBytes: chunk, limitBytes: limit)
        var flushed: [WriteCoalescer.Flush] = []
        for (at, data) in writes { flushed += c.write(at: at, data) }
        if let f = c.take() { flushed.append(f) }
        var file: [UInt8] = []
        for f in flushed {
            let end = Int(f.offset) + f.bytes.count
            if file.count < end { file += [UInt8](repeating: 0, count: end - file.count) }
            file.replaceSubrange(Int(f.offset)..<end, with: f.bytes)
        }
        return (flushed, file)
    }

    @Test func sequentialSmallWritesBecomeChunkAlignedFlushes() {
        let writes = (0..<10).map { k in (UInt64(k * 30), [UInt8](repeating: UInt8(k), count: 30)) }
        let (flushed, file) = replay(writes, chunk: 64, limit: 64)
        #expect(flushed.map(\.offset) == [0, 64, 128, 192, 256])
        #expect(flushed.dropLast().allSatisfy { $0.bytes.count == 64 })
        #expect(file == writes.flatMap(\.1))
    }

    @Test func aWriteElsewhereFlushesWhatIsHeldFirst() {
        let (flushed, _) = replay([(0, [1, 2]), (10, [3])], chunk: 64, limit: 64)
        #expect(flushed == [.init(offset: 0, bytes: [1, 2]), .init(offset: 10, bytes: [3])])
    }

    @Test func aBufferNeverCrossesAChunkOrTheLimit() {
        let (flushed, _) = replay([(60, [UInt8](repeating: 7, count: 100))], chunk: 64, limit: 32)
        #expect(flushed.map(\.offset) == [60, 64, 96, 128])
        for f in flushed {
            #expect(f.bytes.count <= 32)
            #expect(f.offset / 64 == (f.offset + UInt64(f.bytes.count) - 1) / 64)
        }
    }

    @Test func randomWritesEndAsTheSameBytesAsWritingThemDirectly() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var expected = [UInt8](repeating: 0, count: 512)
            var writes: [(UInt64, [UInt8])] = []
            var cursor = 0
            for _ in 0..<20 {
                // Mostly sequential, sometimes a jump back (an overwrite).
                let at = Int.random(in: 0..<4, using: &rng) == 0 ? Int.random(in: 0..<400, using: &rng) : cursor
                let n = Int.random(in: 1...80, using: &rng)
                guard at + n <= 512 else { continue }
                let data = (0..<n).map { _ in UInt8.random(in: 1...255, using: &rng) }
                expected.replaceSubrange(at..<at + n, with: data)
                writes.append((UInt64(at), data))
                cursor = at + n
            }
            let (_, file) = replay(writes, chunk: 64, limit: 48)
            #expect(Array(expected.prefix(file.count)) == file)
            #expect(expected[file.count...].allSatisfy { $0 == 0 })
        }
    }

    @Test func truncatingDropsHeldBytesPastTheCut() {
        var c = WriteCoalescer(chunkBytes: 64, limitBytes: 64)
        _ = c.write(at: 10, [1, 2, 3, 4])
        c.truncate(to: 12)
        #expect(c.take() == .init(offset: 10, bytes: [1, 2]))
        _ = c.write(at: 10, [1, 2])
        c.truncate(to: 5)
        #expect(c.take() == nil)
    }
}

@Suite struct FUSEErrnoTests {
    @Test func everyRefusalHasItsPOSIXError() {
        let cases: [(MetaErrorCode, Int32)] = [
            (.notFound, ENOENT), (.exists, EEXIST), (.notADirectory, ENOTDIR), (.isADirectory, EISDIR), (.notEmpty, ENOTEMPTY),
            (.cycle, EINVAL), (.tooLarge, EFBIG), (.store, EIO), (.noSpace, ENOSPC), (.permissionDenied, EACCES),
        ]
        for (code, errno) in cases { #expect(FUSEErrno.of(CisternError.meta(.refused(code, "x"))) == errno) }
        #expect(FUSEErrno.of(CisternError.meta(.refused(.invalidPath, "a name is longer than 255 bytes"))) == ENAMETOOLONG)
        #expect(FUSEErrno.of(CisternError.meta(.exhausted(attempts: 3, lastError: "down"))) == EIO)
        #expect(FUSEErrno.of(CisternError.storage(.noSpace("full"))) == ENOSPC)
        #expect(FUSEErrno.of(CisternError.storage(.forbidden("cap"))) == EACCES)
        #expect(FUSEErrno.of(CisternError.invalidArgument("x")) == EINVAL)
        #expect(FUSEErrno.of(FUSEFailure(EROFS, "read-only")) == EROFS)
    }
}
