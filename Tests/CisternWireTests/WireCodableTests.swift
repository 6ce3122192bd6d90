import CisternWire
import Testing

/// A message that evolves: version 2 appends a field version 1 does not know.
struct PointV1: WireCodable, Equatable {
    var x: Int64
    func encode(to writer: inout WireWriter) { writer.writeMessage { $0.writeSigned(x) } }
    init(x: Int64) { self.x = x }
    init(from reader: inout WireReader) throws(WireError) {
        x = try reader.readMessage { r throws(WireError) in try r.readSigned() }
    }
}

struct PointV2: WireCodable, Equatable {
    var x: Int64
    var label: String
    func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeSigned(x)
            w.writeString(label)
        }
    }
    init(x: Int64, label: String) {
        self.x = x
        self.label = label
    }
    init(from reader: inout WireReader) throws(WireError) {
        (x, label) = try reader.readMessage { r throws(WireError) in
            let x = try r.readSigned()
            // Appended in version 2: absent in version 1 messages.
            let label = r.isAtEnd ? "" : try r.readString()
            return (x, label)
        }
    }
}

/// A small PRNG for the property tests (the tests must not depend on the process).
struct TestRNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct WireCodableTests {
    @Test func integersRoundTripAcrossTheirRange() throws {
        var rng = TestRNG(state: 1)
        let edges: [UInt64] = [0, 1, 127, 128, 16383, 16384, UInt64(UInt32.max), UInt64.max - 1, UInt64.max]
        for v in edges + (0..<5_000).map({ _ in rng.next() >> UInt64.random(in: 0...63, using: &rng) }) {
            #expect(try UInt64(wireBytes: v.wireBytes()) == v)
            let s = Int64(bitPattern: v)
            #expect(try Int64(wireBytes: s.wireBytes()) == s)
        }
        #expect(try Int64(wireBytes: Int64.min.wireBytes()) == Int64.min)
    }

    @Test func compositeValuesRoundTrip() throws {
        var rng = TestRNG(state: 2)
        for _ in 0..<2_000 {
            let strings = (0..<Int.random(in: 0...5, using: &rng)).map { _ in
                String((0..<Int.random(in: 0...20, using: &rng)).map { _ in Character(UnicodeScalar(UInt8.random(in: 32...126, using: &rng))) }) + "é☃"
            }
            let optional: UInt32? = Bool.random(using: &rng) ? UInt32.random(in: 0...UInt32.max, using: &rng) : nil
            var w = WireWriter()
            w.write(strings)
            w.write(optional)
            w.writeBytes((0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            w.writeBool(true)
            var r = WireReader(w.bytes)
            #expect(try r.read([String].self) == strings)
            #expect(try r.read(UInt32?.self) == optional)
            _ = try r.readBytes()
            #expect(try r.readBool() == true)
            #expect(r.isAtEnd)
        }
    }

    @Test func oldAndNewVersionsReadEachOther() throws {
        let v2 = PointV2(x: -42, label: "appended")
        #expect(try PointV1(wireBytes: v2.wireBytes()) == PointV1(x: -42))
        #expect(try PointV2(wireBytes: PointV1(x: 7).wireBytes()) == PointV2(x: 7, label: ""))
    }

    @Test func truncatedInputThrowsTypedErrors() {
        let full = PointV2(x: 123_456_789, label: "hello").wireBytes()
        for n in 0..<full.count {
            #expect(throws: WireError.self) { try PointV2(wireBytes: Array(full.prefix(n))) }
        }
        #expect(throws: WireError.varintOverflow(offset: 0)) {
            try UInt64(wireBytes: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02])
        }
        #expect(throws: WireError.self) { try Bool(wireBytes: [7]) }
        #expect(throws: WireError.self) { try String(wireBytes: [2, 0xC3, 0x28]) }
    }

    @Test func hugeLengthPrefixesAreRejectedBeforeAllocating() {
        var w = WireWriter()
        w.writeVarint(UInt64(1) << 40)
        var r = WireReader(w.bytes)
        #expect(throws: WireError.self) { try r.readBytes() }
        var a = WireWriter()
        a.writeVarint(UInt64(1) << 50)
        #expect(throws: WireError.self) { try [UInt64](wireBytes: a.bytes) }
    }

    @Test func randomBytesNeverTrapAnyDecoder() {
        var rng = TestRNG(state: 3)
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? UInt64(wireBytes: bytes)
            _ = try? Int64(wireBytes: bytes)
            _ = try? UInt16(wireBytes: bytes)
            _ = try? Bool(wireBytes: bytes)
            _ = try? String(wireBytes: bytes)
            _ = try? [String].init(wireBytes: bytes)
            _ = try? [UInt64?].init(wireBytes: bytes)
            _ = try? PointV1(wireBytes: bytes)
            _ = try? PointV2(wireBytes: bytes)
        }
    }

    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = CRC32C.checksum(data)
        let split = CRC32C.checksum(data[500...], continuing: CRC32C.checksum(data[..<500]))
        #expect(whole == split)
    }
}
