import CisternCore
import CisternWire
import Testing

@testable import CisternRDMA

@Suite("RDMA handshake message")
struct QueuePairInfoTests {
    static func sample(_ random: inout DeterministicRandom) -> QueuePairInfo {
        var gid = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { gid[i] = UInt8(truncatingIfNeeded: random.next()) }
        let length = random.next() >> 20
        let address = random.next() >> 2
        return QueuePairInfo(
            node: NodeID(UInt32(truncatingIfNeeded: random.next())), connectionID: random.next(),
            queuePairNumber: UInt32(truncatingIfNeeded: random.next()) & QueuePairInfo.twentyFourBitMax,
            packetSequenceNumber: UInt32(truncatingIfNeeded: random.next()) & QueuePairInfo.twentyFourBitMax,
            lid: UInt16(truncatingIfNeeded: random.next()), gid: RDMAGID(bytes: gid) ?? .zero,
            pathMTU: RDMAPathMTU(rawValue: UInt8(random.next() % 5 + 1)) ?? .bytes1024,
            readDepth: UInt8(random.next() % 255 + 1),
            buffer: RemoteBuffer(address: address, length: length, rkey: UInt32(truncatingIfNeeded: random.next())),
            landingBytes: length == 0 ? 0 : random.next() % length)
    }

    @Test("round-trips through its wire encoding", arguments: 1...50)
    func roundTrip(seed: UInt64) throws {
        var random = DeterministicRandom(seed: seed)
        let info = Self.sample(&random)
        let bytes = info.wireBytes()
        #expect(try QueuePairInfo(wireBytes: bytes) == info)
        // The layout starts with the magic, little-endian, then format version 1.
        #expect(Array(bytes.prefix(5)) == [0x43, 0x52, 0x44, 0x51, 0x01])
    }

    @Test("extreme field values survive the encoding")
    func extremes() throws {
        let info = QueuePairInfo(
            node: NodeID(UInt32.max), connectionID: UInt64.max, queuePairNumber: QueuePairInfo.twentyFourBitMax,
            packetSequenceNumber: 0, lid: UInt16.max, gid: .zero, pathMTU: .bytes4096, readDepth: 255,
            buffer: RemoteBuffer(address: UInt64.max - 10, length: 10, rkey: UInt32.max), landingBytes: 10)
        #expect(try QueuePairInfo(wireBytes: info.wireBytes()) == info)
    }

    @Test("every truncation of a valid message is rejected")
    func truncated() throws {
        var random = DeterministicRandom(seed: 99)
        let bytes = Self.sample(&random).wireBytes()
        for cut in 0..<bytes.count {
            #expect(throws: WireError.self, "a message cut to \(cut) of \(bytes.count) bytes decoded") {
                try QueuePairInfo(wireBytes: Array(bytes.prefix(cut)))
            }
        }
        #expect(throws: WireError.self) { try QueuePairInfo(wireBytes: bytes + [0]) }
    }

    @Test("a wrong magic or version is named in the error")
    func wrongMagicAndVersion() throws {
        var random = DeterministicRandom(seed: 7)
        var bytes = Self.sample(&random).wireBytes()
        var badMagic = bytes
        badMagic[0] ^= 0xFF
        do {
            _ = try QueuePairInfo(wireBytes: badMagic)
            Issue.record("a wrong magic decoded")
        } catch {
            guard case .invalidValue(let what, _) = error else {
                Issue.record("expected invalidValue, got \(error)")
                return
            }
            #expect(what == "QueuePairInfo magic")
        }
        bytes[4] = 2
        #expect(throws: WireError.invalidValue(what: "QueuePairInfo format version", detail: "2, this build reads 1")) {
            try QueuePairInfo(wireBytes: bytes)
        }
        // A TCP frame or an HTTP request is not a handshake.
        #expect(throws: WireError.self) { try QueuePairInfo(wireBytes: Array("GET / HTTP/1.1\r\n\r\n".utf8)) }
    }

    /// Encodes a body by hand so single fields can be out of range.
    static func handBuilt(
        qpn: UInt64 = 1, psn: UInt64 = 1, lid: UInt64 = 1, gid: [UInt8] = [UInt8](repeating: 0, count: 16), mtu: UInt64 = 3,
        depth: UInt64 = 4, address: UInt64 = 0x1000, length: UInt64 = 0x1000, rkey: UInt64 = 5, landing: UInt64 = 0x800
    ) -> [UInt8] {
        var w = WireWriter()
        w.writeUInt32LE(QueuePairInfo.magic)
        w.writeVarint(1)
        w.writeMessage { b in
            b.write(NodeID(3))
            b.writeVarint(77)
            b.writeVarint(qpn)
            b.writeVarint(psn)
            b.writeVarint(lid)
            b.writeRaw(gid)
            b.writeVarint(mtu)
            b.writeVarint(depth)
            b.writeVarint(address)
            b.writeVarint(length)
            b.writeVarint(rkey)
            b.writeVarint(landing)
        }
        return w.bytes
    }

    @Test("fields outside their ranges are rejected, naming the field")
    func outOfRangeFields() throws {
        #expect(throws: Never.self) { try QueuePairInfo(wireBytes: Self.handBuilt()) }
        let cases: [(String, [UInt8])] = [
            ("queue pair number", Self.handBuilt(qpn: 1 << 24)),
            ("packet sequence number", Self.handBuilt(psn: 1 << 24)),
            ("lid", Self.handBuilt(lid: 1 << 16)),
            ("READ depth", Self.handBuilt(depth: 0)),
            ("READ depth", Self.handBuilt(depth: 256)),
            ("buffer", Self.handBuilt(address: UInt64.max, length: 2)),
            ("buffer rkey", Self.handBuilt(rkey: 1 << 32)),
            ("landing bytes", Self.handBuilt(length: 10, landing: 11)),
        ]
        for (field, bytes) in cases {
            do {
                _ = try QueuePairInfo(wireBytes: bytes)
                Issue.record("\(field): an out-of-range value decoded")
            } catch {
                guard case .invalidValue(let what, _) = error else {
                    Issue.record("\(field): expected invalidValue, got \(error)")
                    continue
                }
                #expect(what == field)
            }
        }
        #expect(throws: WireError.unknownTag(type: "RDMAPathMTU", tag: 6)) { try QueuePairInfo(wireBytes: Self.handBuilt(mtu: 6)) }
        #expect(throws: WireError.unknownTag(type: "RDMAPathMTU", tag: 0)) { try QueuePairInfo(wireBytes: Self.handBuilt(mtu: 0)) }
    }

    @Test("random garbage never decodes into a handshake and never traps", arguments: 1...20)
    func garbage(seed: UInt64) throws {
        var random = DeterministicRandom(seed: seed)
        var valid = Self.sample(&random).wireBytes()
        for _ in 0..<200 {
            let garbage = (0..<Int(random.next() % 80)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            #expect(throws: WireError.self) { try QueuePairInfo(wireBytes: garbage) }
        }
        // Flipping bytes of a valid message either still decodes (a field value
        // changed within range) or throws: never traps.
        for _ in 0..<200 {
            let index = Int(random.next() % UInt64(valid.count))
            let saved = valid[index]
            valid[index] = UInt8(truncatingIfNeeded: random.next())
            _ = try? QueuePairInfo(wireBytes: valid)
            valid[index] = saved
        }
    }

    @Test("the data-call envelopes round-trip and reject garbage")
    func envelopes() throws {
        let request = RDMARequestEnvelope(
            connectionID: 9, service: ServiceID(4), header: [1, 2, 3],
            bulk: .remote(offset: 4096, length: 100, checksum: 0xDEAD_BEEF, token: 0), remainingNanoseconds: 1_000,
            releasedTokens: [1, 2, 300])
        #expect(try RDMARequestEnvelope(wireBytes: request.wireBytes()) == request)
        let response = RDMAResponseEnvelope(
            status: .ok, header: [9], bulk: .remote(offset: 1, length: 2, checksum: 3, token: 4), detail: "")
        #expect(try RDMAResponseEnvelope(wireBytes: response.wireBytes()) == response)
        let refused = RDMAResponseEnvelope(status: .bulkRejected, detail: "checksum")
        #expect(try RDMAResponseEnvelope(wireBytes: refused.wireBytes()) == refused)
        let bytes = request.wireBytes()
        for cut in 0..<bytes.count {
            #expect(throws: WireError.self) { try RDMARequestEnvelope(wireBytes: Array(bytes.prefix(cut))) }
        }
        // A remote placement of zero bytes, or one that wraps, is malformed.
        var w = WireWriter()
        w.writeVarint(1)
        w.writeMessage { b in
            b.writeVarint(UInt64.max)
            b.writeVarint(2)
            b.writeUInt32LE(0)
            b.writeVarint(0)
        }
        #expect(throws: WireError.self) { try BulkPlacement(wireBytes: w.bytes) }
        #expect(throws: WireError.unknownTag(type: "BulkPlacement", tag: 7)) { try BulkPlacement(wireBytes: [7]) }
    }
}

@Suite("RDMA error paths")
struct RDMAErrorPathTests {
    @Test("opening a device by a bogus name fails with a precise error")
    func bogusDeviceName() throws {
        let bogus = "no-such-rdma-device-\(UInt32.random(in: 0...UInt32.max))"
        do {
            let device = try RDMADevice.open(name: bogus)
            Issue.record("opened \(device.name) when asking for \(bogus)")
        } catch {
            switch RDMAProbe.devices() {
            case .devices(let names):
                #expect(error == .noSuchDevice(name: bogus, available: names))
                #expect(error.description.contains(bogus))
            case .none:
                // No RDMA here: the device list itself fails, and the error says which
                // call failed and why (ENOSYS on hosts without RDMA support).
                guard case .verbs(let call, let code, let text) = error else {
                    Issue.record("expected a verbs error, got \(error)")
                    return
                }
                #expect(call == "ibv_get_device_list")
                #expect(code != 0)
                #expect(!text.isEmpty)
                #expect(error.description == "ibv_get_device_list failed: \(text) (errno \(code))")
            }
        }
    }

    @Test("arguments the verbs layer cannot take are refused before any call")
    func invalidArguments() throws {
        #expect(throws: RDMAError.invalidArgument("GID index 256 is outside 0...255")) { try RDMADevice.open(gidIndex: 256) }
        #expect(throws: RDMAError.invalidArgument("GID index -1 is outside 0...255")) { try RDMADevice.open(gidIndex: -1) }
        #expect(throws: RDMAError.invalidArgument("port 0: ports are numbered from 1")) { try RDMADevice.open(port: 0) }
    }

    @Test("error descriptions name the call, errno text, device and status")
    func descriptions() {
        #expect(RDMAError.verbs("ibv_create_qp", 12).description.hasPrefix("ibv_create_qp failed: "))
        #expect(RDMAError.verbs("ibv_create_qp", 12).description.hasSuffix("(errno 12)"))
        #expect(RDMAError.noSuchDevice(name: "mlx9", available: ["mlx5_0"]).description == "no RDMA device named mlx9; this host has mlx5_0")
        #expect(RDMAError.portNotActive(device: "mlx5_0", port: 1, state: "PORT_DOWN").description.contains("PORT_DOWN"))
        #expect(
            RDMAError.completionFailed(operation: "RDMA READ", status: "remote access error", vendorError: 0x88).description
                == "RDMA READ completed with error: remote access error (vendor error 0x88)")
    }
}
