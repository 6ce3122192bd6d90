import CisternCore
import CisternDemo
import CisternWire
import Testing

@Suite struct DemoWireTests {
    @Test func registerMessagesRoundTrip() throws {
        var rng = DeterministicRandom(seed: 11)
        for i in 0..<2_000 {
            let stamp = Stamp(counter: rng.next() >> UInt64(i % 64), writer: UInt32(truncatingIfNeeded: rng.next()))
            let value: String? = i % 3 == 0 ? nil : "v\(rng.next())"
            for request in [RegisterRequest.read(key: "k\(i)"), .write(key: "k\(i)", stamp: stamp, value: value)] {
                #expect(try RegisterRequest(request.message()) == request)
            }
            let reply = RegisterReply(stamp: stamp, value: value)
            #expect(try RegisterReply(wireBytes: reply.wireBytes()) == reply)
            #expect(try NodeAddress(wireBytes: NodeAddress(host: "10.0.0.\(i % 256)", port: UInt16(i)).wireBytes()) == NodeAddress(host: "10.0.0.\(i % 256)", port: UInt16(i)))
        }
    }

    @Test func randomBytesNeverTrapTheDemoDecoders() {
        var rng = DeterministicRandom(seed: 12)
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...48, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            for method in UInt16(0)...3 { _ = try? RegisterRequest(Message(method: method, header: bytes)) }
            _ = try? RegisterReply(wireBytes: bytes)
            _ = try? Stamp(wireBytes: bytes)
            _ = try? NodeAddress(wireBytes: bytes)
            _ = try? NodeID(wireBytes: bytes)
            _ = RegisterLog.recover(bytes)
        }
    }

    @Test func logRecoveryKeepsTheLongestValidPrefix() {
        let records = (0..<10).map { RegisterLog.Record(key: "k", stamp: Stamp(counter: UInt64($0), writer: 1), value: "v\($0)") }
        let frames = records.map(RegisterLog.frame)
        let all = frames.flatMap { $0 }
        #expect(RegisterLog.recover(all).records == records)
        // A torn tail is cut off at the last whole record.
        let cut = all.count - 3
        let (kept, valid) = RegisterLog.recover(Array(all.prefix(cut)))
        #expect(kept == Array(records.prefix(9)))
        let nineBytes: Int = frames.prefix(9).map(\.count).reduce(0, +)
        #expect(valid == nineBytes)
        // A flipped bit in record 5 stops recovery there.
        var flipped = all
        let fifthStart: Int = frames.prefix(5).map(\.count).reduce(0, +)
        flipped[fifthStart + 10] ^= 0x04
        #expect(RegisterLog.recover(flipped).records == Array(records.prefix(5)))
    }
}
