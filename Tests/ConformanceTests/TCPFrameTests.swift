import CisternCore
import CisternNIO
import NIOCore
import Testing

@Suite("TCP frame codec")
struct TCPFrameTests {
    static func sample(_ random: inout DeterministicRandom, maxBytes: Int = 2000) -> TCPFrame {
        let kinds: [TCPFrame.Kind] = [.request, .response, .errorResponse]
        let headerCount = Int(random.next() % UInt64(maxBytes / 2 + 1))
        let bulkCount = Int(random.next() % UInt64(maxBytes / 2 + 1))
        return TCPFrame(
            kind: kinds[Int(random.next() % 3)], requestID: random.next(),
            source: NodeID(UInt32(truncatingIfNeeded: random.next())),
            destination: NodeID(UInt32(truncatingIfNeeded: random.next())),
            service: ServiceID(UInt16(truncatingIfNeeded: random.next())),
            method: UInt16(truncatingIfNeeded: random.next()),
            header: (0..<headerCount).map { _ in UInt8(truncatingIfNeeded: random.next()) },
            bulk: (0..<bulkCount).map { _ in UInt8(truncatingIfNeeded: random.next()) })
    }

    @Test("frames round-trip, alone and back to back")
    func roundTrip() throws {
        var random = DeterministicRandom(seed: 1)
        var stream: [UInt8] = []
        var frames: [TCPFrame] = []
        for _ in 0..<200 {
            let frame = Self.sample(&random)
            let bytes = frame.encoded()
            #expect(bytes.count == frame.encodedByteCount)
            #expect(Array(bytes.prefix(4)) == Array("CSTN".utf8))
            let decoded = try #require(try TCPFrame.decode(bytes))
            #expect(decoded.frame == frame)
            #expect(decoded.consumedBytes == bytes.count)
            stream += bytes
            frames.append(frame)
        }
        var offset = 0
        for frame in frames {
            let decoded = try #require(try TCPFrame.decode(Array(stream[offset...])))
            #expect(decoded.frame == frame)
            offset += decoded.consumedBytes
        }
        #expect(offset == stream.count)
    }

    @Test("the layout is the documented one")
    func layout() throws {
        let frame = TCPFrame(
            kind: .response, requestID: 0x0102_0304_0506_0708, source: NodeID(0x0A0B_0C0D), destination: NodeID(0x11),
            service: ServiceID(0x2233), method: 0x4455, header: [0xAA], bulk: [0xBB, 0xCC])
        let bytes = frame.encoded()
        #expect(bytes.count == 34 + 1 + 2 + 4)
        #expect(Array(bytes[0..<34]) == [
            0x43, 0x53, 0x54, 0x4E, 1, 1,
            1, 2, 3, 4, 5, 6, 7, 8,
            0x0A, 0x0B, 0x0C, 0x0D, 0, 0, 0, 0x11,
            0x22, 0x33, 0x44, 0x55,
            0, 0, 0, 1, 0, 0, 0, 2,
        ])
        #expect(Array(bytes[34..<37]) == [0xAA, 0xBB, 0xCC])
    }

    @Test("every truncation of a valid frame asks for more bytes, never yields a frame")
    func truncations() throws {
        var random = DeterministicRandom(seed: 2)
        for _ in 0..<20 {
            let bytes = Self.sample(&random, maxBytes: 200).encoded()
            for length in 0..<bytes.count {
                #expect(try TCPFrame.decode(Array(bytes.prefix(length))) == nil, "prefix of \(length) bytes")
            }
        }
    }

    @Test("2,000 random byte strings and corrupted frames are refused without a crash")
    func fuzz() throws {
        var random = DeterministicRandom(seed: 3)
        var refused = 0
        var incomplete = 0
        for round in 0..<2000 {
            var bytes: [UInt8]
            switch round % 4 {
            case 0:
                // Pure noise.
                bytes = (0..<Int(random.next() % 512)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            case 1:
                // A plausible fixed part (magic, version, kind) followed by noise.
                bytes = [0x43, 0x53, 0x54, 0x4E, 1, UInt8(random.next() % 4)]
                bytes += (0..<Int(random.next() % 512)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            case 2:
                // A valid frame with one to four bytes changed.
                bytes = Self.sample(&random, maxBytes: 300).encoded()
                for _ in 0..<(1 + Int(random.next() % 4)) {
                    let i = Int(random.next() % UInt64(bytes.count))
                    bytes[i] ^= UInt8(truncatingIfNeeded: random.next() % 255 + 1)
                }
            default:
                // A truncated valid frame, then noise.
                let valid = Self.sample(&random, maxBytes: 300).encoded()
                bytes = Array(valid.prefix(Int(random.next() % UInt64(valid.count))))
                bytes += (0..<Int(random.next() % 64 + 1)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            }
            do {
                if let decoded = try TCPFrame.decode(bytes) {
                    // Only possible when a corruption or noise happened to form a
                    // consistent frame (a checksum collision); then it must re-encode exactly.
                    #expect(decoded.frame.encoded() == Array(bytes.prefix(decoded.consumedBytes)))
                } else {
                    incomplete += 1
                }
            } catch {
                refused += 1
            }
        }
        #expect(refused + incomplete == 2000)
        #expect(refused > 1500)
    }

    @Test("lengths over the message limit are refused before the body arrives")
    func oversizedLengths() throws {
        var bytes = TCPFrame(
            kind: .request, requestID: 1, source: NodeID(1), destination: NodeID(2), service: ServiceID(1), method: 1, header: []
        ).encoded()
        bytes.replaceSubrange(26..<34, with: [0x02, 0, 0, 0, 0x02, 0, 0, 1])
        #expect(throws: TCPFrameError.tooLarge(headerBytes: 32 << 20, bulkBytes: (32 << 20) + 1, limitBytes: TransportLimits.messageBytesMax)) {
            try TCPFrame.decode(Array(bytes.prefix(34)))
        }
        #expect(throws: TCPFrameError.badMagic(found: 0x4854_5450)) { try TCPFrame.decode(Array("HTTP".utf8)) }
        #expect(throws: TCPFrameError.unsupportedVersion(found: 2)) { try TCPFrame.decode([0x43, 0x53, 0x54, 0x4E, 2]) }
        #expect(throws: TCPFrameError.unknownKind(found: 9)) { try TCPFrame.decode([0x43, 0x53, 0x54, 0x4E, 1, 9]) }
    }

    /// Frames of every size (large ones streamed into their own arrays) cut at random
    /// places, as socket reads deliver them: every frame comes out whole and equal; a
    /// flipped bit anywhere in a large frame is refused.
    @Test("the stream decoder rebuilds frames from any cut of the byte stream")
    func streamDecoderRebuildsFramesFromAnyCut() throws {
        var random = DeterministicRandom(seed: 7)
        var frames: [TCPFrame] = []
        var stream: [UInt8] = []
        for i in 0..<40 {
            var frame = Self.sample(&random)
            if i % 3 == 0 {
                frame.bulk = (0..<(TCPFrameStream.streamedBulkBytesMin + Int(random.next() % 200_000))).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }
            }
            frames.append(frame)
            stream += frame.encoded()
        }
        for round in 0..<5 {
            var decoder = TCPFrameStream()
            var buffer = ByteBuffer()
            var got: [TCPFrame] = []
            var offset = 0
            while offset < stream.count {
                let cut = min(stream.count - offset, 1 + Int(random.next() % UInt64(round == 0 ? 7 : 300_000)))
                buffer.writeBytes(stream[offset..<offset + cut])
                offset += cut
                while let frame = try decoder.next(from: &buffer) { got.append(frame) }
            }
            #expect(got == frames, "round \(round): \(got.count) of \(frames.count) frames")
            #expect(buffer.readableBytes == 0 && !decoder.isInsideFrame)
        }
        // A flipped bit in a large frame's header, bulk or checksum is refused.
        let large = frames[0].encoded()
        for position in [2_000 % large.count, TCPFrame.fixedBytes + 1, large.count / 2, large.count - 2] {
            var bad = large
            bad[position] ^= 0x10
            var decoder = TCPFrameStream()
            var buffer = ByteBuffer(bytes: bad)
            var refused = false
            do {
                while try decoder.next(from: &buffer) != nil {}
            } catch {
                refused = true
            }
            #expect(refused, "a flipped bit at \(position) of \(large.count) was accepted")
        }
    }
}
