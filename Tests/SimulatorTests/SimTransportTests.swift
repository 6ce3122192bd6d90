import CisternCore
import CisternSim
import Testing

let echo = ServiceID(7)

/// Boots a node that echoes every request.
func bootEcho(_ node: SimNode) {
    node.boot = { ctx in
        await ctx.transport.serve(echo) { request in request.message }
    }
}

@Suite struct SimTransportTests {
    @Test func echoRoundTripAndVirtualTime() {
        let (reply, elapsed, tripped) = SimWorld.simulate(seed: 1) { world -> (Message?, UInt64, String?) in
            let a = world.addNode(name: "a", host: "10.0.0.1")
            let b = world.addNode(name: "b", host: "10.0.0.2")
            bootEcho(b)
            world.start(b)
            let pa = world.start(a)
            var got: Message?
            world.spawn {
                got = try? await pa.transport.call(b.id, service: echo, Message(method: 3, header: [1, 2, 3], bulk: [9]), timeoutNanoseconds: 1_000_000_000)
            }
            world.run(untilNanoseconds: 10_000_000_000)
            return (got, world.nowNanoseconds, world.executor.tripped)
        }
        #expect(reply == Message(method: 3, header: [1, 2, 3], bulk: [9]))
        #expect(elapsed > 0)
        #expect(tripped == nil)
    }

    @Test func killedPeerIsRefusedAndPartitionTimesOut() {
        let errors = SimWorld.simulate(seed: 2) { world -> [TransportError] in
            let a = world.addNode(name: "a", host: "10.0.0.1")
            let b = world.addNode(name: "b", host: "10.0.0.2")
            bootEcho(b)
            world.start(b)
            let pa = world.start(a)
            var errors: [TransportError] = []
            world.spawn {
                world.kill(b)
                do { _ = try await pa.transport.call(b.id, service: echo, Message(method: 1, header: []), timeoutNanoseconds: 1_000_000_000) } catch let e as TransportError { errors.append(e) } catch {}
                world.start(b)
                world.network.partition([a.id], [b.id])
                do { _ = try await pa.transport.call(b.id, service: echo, Message(method: 1, header: []), timeoutNanoseconds: 1_000_000_000) } catch let e as TransportError { errors.append(e) } catch {}
            }
            world.run(untilNanoseconds: 10_000_000_000)
            return errors
        }
        #expect(errors.count == 2)
        guard errors.count == 2 else { return }
        if case .unreachable = errors[0] {} else { Issue.record("expected unreachable, got \(errors[0])") }
        #expect(errors[1] == .timeout(node: NodeID(2), nanoseconds: 1_000_000_000))
    }

    @Test func ipChangeIsFollowedThroughTheNameService() {
        let outcomes = SimWorld.simulate(seed: 3) { world -> [Bool] in
            let a = world.addNode(name: "a", host: "10.0.0.1")
            let b = world.addNode(name: "b", host: "10.0.0.2")
            bootEcho(b)
            world.start(b)
            let pa = world.start(a)
            var outcomes: [Bool] = []
            world.spawn {
                for i in 0..<6 {
                    if i == 2 { world.changeAddress(b, to: "10.0.9.9") }
                    let ok = (try? await pa.transport.call(b.id, service: echo, Message(method: 1, header: []), timeoutNanoseconds: 100_000_000)) != nil
                    outcomes.append(ok)
                }
            }
            world.run(untilNanoseconds: 10_000_000_000)
            return outcomes
        }
        // The call right after the move times out (old address); later calls re-resolve.
        #expect(outcomes == [true, true, false, true, true, true])
    }

    @Test func sameSeedSameDigestDifferentSeedsDiffer() {
        func digest(_ seed: UInt64) -> UInt64 {
            var net = NetworkConfig()
            net.lossProbability = 0.05
            return SimWorld.simulate(seed: seed, network: net) { world -> UInt64 in
                let a = world.addNode(name: "a", host: "10.0.0.1")
                let b = world.addNode(name: "b", host: "10.0.0.2")
                bootEcho(b)
                world.start(b)
                let pa = world.start(a)
                for _ in 0..<4 {
                    world.spawn {
                        for _ in 0..<50 {
                            _ = try? await pa.transport.call(b.id, service: echo, Message(method: 1, header: [1]), timeoutNanoseconds: 5_000_000)
                        }
                    }
                }
                world.run(untilNanoseconds: 60_000_000_000)
                return world.trace.digest
            }
        }
        #expect(digest(7) == digest(7))
        let digests = Set((1...20).map { digest(UInt64($0)) })
        #expect(digests.count == 20)
    }
}

@Suite struct MultiAddressTests {
    @Test func callsFailOverToANodesOtherNetwork() {
        let outcomes = SimWorld.simulate(seed: 5) { world -> [Bool] in
            let a = world.addNode(name: "a", host: "10.0.0.1")
            let b = world.addNode(name: "b", host: "10.0.0.2", secondaryHosts: ["192.168.7.2"])
            bootEcho(b)
            world.start(b)
            let pa = world.start(a)
            var outcomes: [Bool] = []
            world.spawn {
                for i in 0..<6 {
                    if i == 2 { world.dropAddress(b, host: "10.0.0.2") }
                    let ok = (try? await pa.transport.call(b.id, service: echo, Message(method: 1, header: []), timeoutNanoseconds: 100_000_000)) != nil
                    outcomes.append(ok)
                }
            }
            world.run(untilNanoseconds: 10_000_000_000)
            return outcomes
        }
        // The first call after the primary network fails times out; the caller then
        // resolves again and uses the second address.
        #expect(outcomes == [true, true, false, true, true, true])
    }
}
