import CisternCore
import CisternMeta
import CisternNIO
import CisternSQLite
import CisternWire
import Synchronization
import Testing

/// A chunk remover that records the ranges it was asked to remove.
final class RangeRecorder: ChunkRemover {
    let asked = Mutex<[(InodeID, Range<UInt64>)]>([])
    func removeChunks(of inode: InodeID, layout: Layout, range: Range<UInt64>) async throws {
        asked.withLock { $0.append((inode, range)) }
    }
}

/// Owners, modes and times of inodes; truncation's chunk removal; the appended wire
/// fields read by old and new peers.
@Suite struct AttributeTests {
    @Test func newInodesCarryTheirOwnerModeAndWallClockTimes() async throws {
        let m = try service()
        let alice = Owner(uid: 1000, gid: 100)
        let f = try await m.mutate { try await $0.create("/f", mode: 0o100640, policy: policy, owner: alice) }!
        #expect(f.owner == alice && f.mode == 0o640, "type bits are dropped; permission bits kept")
        let d = try await m.mutate { try await $0.mkdir("/d", mode: 0o750, owner: alice) }!
        #expect(d.owner == alice && d.mode == 0o750)
        let s = try await m.mutate { try await $0.symlink("/s", target: "f", owner: alice) }!
        #expect(s.owner == alice)
        // The production runtime's wall clock: a date after 2020, not seconds of uptime.
        #expect(f.mtimeNanoseconds > 1_577_836_800 * 1_000_000_000)
        #expect(f.atimeNanoseconds == f.mtimeNanoseconds && f.ctimeNanoseconds == f.mtimeNanoseconds)
    }

    @Test func setattrChangesOnlyWhatItNamesAndAlwaysTheChangeTime() async throws {
        let m = try service()
        let f = try await m.mutate { try await $0.create("/f", policy: policy) }!
        let t = try await m.mutate { try await $0.setattr("/f", AttributeChange(uid: 7, atimeNanoseconds: 5, mtimeNanoseconds: 9)) }!
        #expect(t.owner == Owner(uid: 7, gid: 0) && t.mode == f.mode)
        #expect(t.atimeNanoseconds == 5 && t.mtimeNanoseconds == 9)
        #expect(t.ctimeNanoseconds >= f.ctimeNanoseconds)
        let u = try await m.mutate { try await $0.setattr("/f", AttributeChange(mode: 0o4755, gid: 3)) }!
        #expect(u.mode == 0o4755 && u.owner == Owner(uid: 7, gid: 3) && u.mtimeNanoseconds == 9)
        let missing = await error { try await m.mutate { try await $0.setattr("/nope", AttributeChange(mode: 0o600)) } }
        #expect(missing == .notFound("/nope"))
    }

    @Test func aWriterReportSetsTheModificationTimeEvenWithoutGrowth() async throws {
        let m = try service()
        let f = try await m.mutate { try await $0.create("/f", policy: policy) }!
        _ = try await m.mutate { try await $0.setattr("/f", AttributeChange(mtimeNanoseconds: 1)) }
        let synced = try await m.mutate { try await $0.sync(f.id, length: 0) }!
        #expect(synced.mtimeNanoseconds > 1 && synced.length == 0)
        let untouched = try await m.mutate { try await $0.sync(f.id, length: nil) }!
        #expect(untouched.mtimeNanoseconds == synced.mtimeNanoseconds, "no report, no change")
    }

    @Test func shrinkingDeletesTheChunksPastTheNewEndOnly() async throws {
        let remover = RangeRecorder()
        let m = MetaService(kv: try SQLiteKV(), runtime: ProductionRuntime(nodeName: "meta-test", baseSeed: 1, logLevel: .critical), policy: policy, remover: remover)
        let f = try await m.mutate { try await $0.create("/f", policy: policy) }!
        _ = try await m.mutate { try await $0.sync(f.id, length: 5 << 20 + 10) }
        // 5 MiB + 10 bytes: chunks 0...5. Cut to 1.5 MiB: chunk 1 keeps its first
        // half (the client zeroes the rest); chunks 2...5 go.
        let cut = try await m.truncate("/f", length: 3 << 19)
        #expect(cut?.length == 3 << 19)
        #expect(remover.asked.withLock { $0.map(\.1) } == [2..<6])
        // Cutting at a chunk boundary removes from that chunk; growing removes nothing.
        _ = try await m.truncate("/f", length: 1 << 20)
        _ = try await m.truncate("/f", length: 8 << 20)
        #expect(remover.asked.withLock { $0.map(\.1) } == [2..<6, 1..<2])
        // A retry of an applied request removes nothing more.
        _ = try await m.truncate("/f", length: 0, client: 1, request: 1)
        _ = try await m.truncate("/f", length: 0, client: 1, request: 1)
        #expect(remover.asked.withLock { $0.map(\.1) } == [2..<6, 1..<2, 0..<8])
        #expect(try await m.stat("/f").length == 0)
    }

    @Test func oldInodeRecordsReadWithRootOwnerAndTheirModificationTime() throws {
        // An inode as first written: the fields before owner and times.
        var w = WireWriter()
        w.writeMessage { m in
            m.write(InodeID(5))
            m.write(InodeType.file)
            m.write(UInt32(1))
            m.write(UInt32(0o644))
            m.writeVarint(10)
            m.writeVarint(77)
            m.write(InodeID?.none)
            m.write(Layout?.none)
            m.write(String?.none)
        }
        let old = try Inode(wireBytes: w.bytes)
        #expect(old.owner == .root && old.atimeNanoseconds == 77 && old.ctimeNanoseconds == 77 && old.length == 10)
        let new = Inode(id: InodeID(5), type: .file, owner: Owner(uid: 1, gid: 2), atimeNanoseconds: 3, ctimeNanoseconds: 4)
        #expect(try Inode(wireBytes: new.wireBytes()) == new)
    }

    @Test func extendedOperationsRoundTripAndOldFormsStillDecode() throws {
        let ops: [MetaOp] = [
            .create("/a", mode: 0o600, exclusive: true, owner: Owner(uid: 1, gid: 2)),
            .create("/a", mode: 0o600, exclusive: false),
            .mkdir("/d", parents: true, mode: 0o700, owner: Owner(uid: 3, gid: 4)),
            .mkdir("/d", parents: false),
            .symlink("/s", target: "t", owner: Owner(uid: 5, gid: 6)),
            .setattr("/a", AttributeChange(mode: 0o644, uid: 1, gid: nil, atimeNanoseconds: 2, mtimeNanoseconds: nil)),
        ]
        for op in ops {
            let r = MetaRequest(client: 1, request: 2, op: op)
            #expect(try MetaRequest(r.message()) == r)
        }
        // setattr as first sent: path and mode only.
        var w = WireWriter()
        w.writeMessage { m in
            m.writeVarint(1)
            m.writeVarint(2)
            m.writeString("/a")
            m.write(UInt32?.some(0o600))
        }
        let old = try MetaRequest(Message(method: 13, header: w.bytes))
        #expect(old.op == .setattr("/a", AttributeChange(mode: 0o600)))
    }
}
