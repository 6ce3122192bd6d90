import CisternCore
import CisternRouting
import CisternStorage
import CisternWire
import Testing

@Suite struct StorageWireTests {
    let block = BlockAddress(sizeClass: SizeClass(index: 3)!, file: 2, block: 7)

    @Test func messagesRoundTrip() throws {
        let tag = ClientTag(client: 9, channel: 1, sequence: 77)
        let args = WriteArgs(target: TargetID(101), chain: ChainID(2), chainVersion: 5, chunk: ChunkID(inode: 3, index: 4), offset: 100, version: 6, checksum: 0xABCD, fullReplace: true, tag: tag)
        let requests: [StorageRequest] = [
            .write(args), .read(target: TargetID(1), chain: ChainID(2), chainVersion: 3, chunk: ChunkID(inode: 4, index: 5)),
            .dumpMeta(target: TargetID(6), chainVersion: 7), .removeChunk(target: TargetID(8), chainVersion: 9, chunk: ChunkID(inode: 1, index: 1)),
            .syncDone(target: TargetID(2), chainVersion: 3), .readBatch(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunks: [ChunkID(inode: 1, index: 2)]),
            .statChunk(target: TargetID(3), chain: ChainID(4), chainVersion: 5, chunk: ChunkID(inode: 6, index: 7)),
            .readRange(target: TargetID(3), chain: ChainID(4), chainVersion: 5, chunk: ChunkID(inode: 6, index: 7), offset: 4096, length: 8192),
            .write(WriteArgs(target: TargetID(1), chain: ChainID(2), chainVersion: 3, chunk: ChunkID(inode: 4, index: 5), tag: tag, durable: false)),
            .writeBatch(WriteBatchArgs(target: TargetID(1), chain: ChainID(2), chainVersion: 3, tag: tag, durable: false, items: [
                WriteBatchItem(chunk: ChunkID(inode: 1, index: 1), length: 1), WriteBatchItem(chunk: ChunkID(inode: 1, index: 2), length: 1, version: 4, checksum: 5, fullReplace: true),
            ])),
            .dumpMetaPage(target: TargetID(6), chainVersion: 7, after: nil, limit: 100),
            .dumpMetaPage(target: TargetID(6), chainVersion: 7, after: ChunkID(inode: 9, index: 3), limit: UInt32.max),
        ]
        for r in requests { #expect(try StorageRequest(r.message(bulk: [1, 2])) == r) }
        let meta = ChunkMeta(id: ChunkID(inode: 1, index: 2), committed: ChunkVersion(version: 3, chainVersion: 4, length: 5, checksum: 6, block: block), pending: nil)
        let replies: [StorageReply] = [
            .written(version: 3), .data(version: 4, checksum: 5), .notCommitted, .notFound, .chainVersionMismatch(current: 8),
            .notServing("why"), .corrupt, .meta([meta]), .done, .failed("no"),
            .batch([BatchReadItem(chunk: ChunkID(inode: 1, index: 1), status: .data, version: 2, checksum: 3, length: 4)]),
            .chunkStat(version: 9, length: 1234),
            .batchWritten([.written(version: 1), .failed("disk full"), .notServing("x")]),
            .noSpace("no space left"), .metaPage([meta, meta], more: true), .metaPage([], more: false),
        ]
        for r in replies { #expect(try StorageReply(wireBytes: r.wireBytes()) == r) }
    }

    @Test func aWriteFromBeforeTheDurableFieldIsDurable() throws {
        // The encoding of version 1, without the trailing durability flag.
        let tag = ClientTag(client: 1, channel: 2, sequence: 3)
        var w = WireWriter()
        w.writeMessage { m in
            m.write(TargetID(1)); m.write(ChainID(2)); m.writeVarint(3); m.write(ChunkID(inode: 4, index: 5)); m.write(0)
            m.writeVarint(0); m.writeUInt32LE(0); m.writeBool(false); m.write(tag)
        }
        var r = WireReader(w.bytes)
        #expect(try WriteArgs(from: &r).durable == true)
    }

    @Test func aBatchAnswerInsideABatchAnswerIsRefused() {
        // Nested batch answers would let a crafted reply recurse without bound.
        var w = WireWriter()
        w.writeVarint(13)
        w.writeMessage { m in
            m.writeVarint(1)
            m.write(StorageReply.batchWritten([.done]))
        }
        #expect(throws: WireError.self) { try StorageReply(wireBytes: w.bytes) }
    }

    @Test func randomBytesNeverTrapTheStorageDecoders() {
        var rng = DeterministicRandom(seed: 31)
        let valid = StorageReply.meta([ChunkMeta(id: ChunkID(inode: 1, index: 2), committed: ChunkVersion(version: 3, chainVersion: 4, length: 5, checksum: 6, block: block))]).wireBytes()
        for i in 0..<20_000 {
            var bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if i % 2 == 0 {
                bytes = valid
                for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            }
            for method in UInt16(0)...7 { _ = try? StorageRequest(Message(method: method, header: bytes)) }
            _ = try? StorageReply(wireBytes: bytes)
            _ = try? ChunkMeta(wireBytes: bytes)
            _ = try? WriteArgs(wireBytes: bytes)
            _ = try? BatchReadItem(wireBytes: bytes)
            _ = ChunkEngine.recoveredMetadata(from: bytes)
        }
    }
}
