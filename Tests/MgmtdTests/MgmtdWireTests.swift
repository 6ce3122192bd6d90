import CisternCore
import CisternMgmtd
import CisternRouting
import CisternWire
import Testing

func sampleRouting(_ v: UInt64) -> RoutingInfo {
    RoutingInfo(
        version: v,
        nodes: [NodeInfo(id: NodeID(1), role: .storage, name: "s1", status: .active), NodeInfo(id: NodeID(2), role: .client, name: "c1", status: .failed)],
        targets: [TargetInfo(id: TargetID(101), node: NodeID(1), chain: ChainID(1), localState: .upToDate, usedBytes: 5, capacityBytes: 9)],
        chains: [Chain(id: ChainID(1), version: 3, targets: [ChainTarget(TargetID(101), .serving), ChainTarget(TargetID(201), .offline)])],
        tables: [ChainTable(id: 1, version: 2, chains: [ChainID(1)])])
}

@Suite struct MgmtdWireTests {
    @Test func requestsRoundTrip() throws {
        let requests: [MgmtdRequest] = [
            .heartbeat(Heartbeat(node: NodeID(3), role: .storage, name: "s3", sequence: 42, targets: [TargetReport(target: TargetID(7), localState: .online, usedBytes: 1, capacityBytes: 2)], bootID: 99)),
            .getRouting(knownVersion: 12), .setNodeEnabled(NodeID(4), enabled: false), .offlineTarget(TargetID(5)),
            .removeTarget(TargetID(6)), .rotateLastsrv(ChainID(7)), .createChains(replicas: 3),
        ]
        for r in requests { #expect(try MgmtdRequest(r.message()) == r) }
    }

    @Test func repliesRoundTrip() throws {
        let replies: [MgmtdReply] = [.ok(routingVersion: 5), .routing(sampleRouting(9)), .unchanged(routingVersion: 9), .notPrimary(primary: NodeID(2)), .notPrimary(primary: nil), .refused("why")]
        for r in replies { #expect(try MgmtdReply(wireBytes: r.wireBytes()) == r) }
        let lease = LeaseRecord(holder: NodeID(1), epoch: 2, renewal: 3, durationNanoseconds: 4)
        #expect(try LeaseRecord(wireBytes: lease.wireBytes()) == lease)
    }

    @Test func aHeartbeatFromBeforeBootIDsStillDecodes() throws {
        // An older sender's heartbeat has no boot id field: it decodes with 0.
        var w = WireWriter()
        w.writeMessage { m in
            m.write(NodeID(3))
            m.write(NodeRole.storage)
            m.writeString("s3")
            m.writeVarint(5)
            m.write([TargetReport]())
        }
        let h = try Heartbeat(wireBytes: w.bytes)
        #expect(h.bootID == 0)
        #expect(h.sequence == 5)
    }

    @Test func randomBytesNeverTrapTheMgmtdDecoders() {
        var rng = DeterministicRandom(seed: 21)
        let valid = MgmtdReply.routing(sampleRouting(3)).wireBytes()
        for i in 0..<20_000 {
            var bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if i % 2 == 0 {
                // Mutations of a valid message reach deeper into the decoders.
                bytes = valid
                for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            }
            for method in UInt16(0)...8 { _ = try? MgmtdRequest(Message(method: method, header: bytes)) }
            _ = try? MgmtdReply(wireBytes: bytes)
            _ = try? RoutingInfo(wireBytes: bytes)
            _ = try? LeaseRecord(wireBytes: bytes)
            _ = try? RoutingHint(wireBytes: bytes)
        }
    }

    @Test func configProblemsAreNamed() {
        var c = MgmtdConfig()
        #expect(c.problems().isEmpty)
        c.failureTimeoutNanoseconds = c.heartbeatIntervalNanoseconds
        #expect(c.problems().contains { $0.contains("two heartbeat intervals") })
    }
}
