import CisternCore
import Foundation

/// Measures the simulator's own speed: small request/response calls between two
/// simulated nodes, many in flight, all on the one simulator thread.
public enum SimBenchmark {
    public struct Result: Sendable, Codable {
        public var calls: Int
        public var concurrency: Int
        public var wallSeconds: Double
        public var simulatedSeconds: Double
        public var rpcsPerSecond: Double
        public var digest: String

        enum CodingKeys: String, CodingKey {
            case calls, concurrency, digest
            case wallSeconds = "wall_seconds", simulatedSeconds = "simulated_seconds", rpcsPerSecond = "rpcs_per_second"
        }
    }

    static let service = ServiceID(1)

    public static func run(calls: Int = 400_000, concurrency: Int = 64, seed: UInt64 = 1) -> Result {
        SimWorld.simulate(seed: seed) { world in
            let server = world.addNode(name: "server", host: "10.0.0.1")
            let client = world.addNode(name: "client", host: "10.0.0.2")
            server.boot = { ctx in
                await ctx.transport.serve(service) { request in
                    Message(method: request.message.method, header: request.message.header)
                }
            }
            world.start(server)
            let process = world.start(client)
            let transport = process.transport!
            let perTask = calls / concurrency
            var completed = 0
            var failed = 0
            for t in 0..<concurrency {
                world.spawn {
                    let header = [UInt8](repeating: UInt8(truncatingIfNeeded: t), count: 16)
                    for _ in 0..<perTask {
                        do {
                            _ = try await transport.call(server.id, service: service, Message(method: 1, header: header), timeoutNanoseconds: 1_000_000_000)
                            completed += 1
                        } catch {
                            failed += 1
                        }
                    }
                }
            }
            let start = DispatchTime.now().uptimeNanoseconds
            world.run(untilNanoseconds: UInt64.max / 2) { completed + failed == perTask * concurrency }
            let wall = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            precondition(failed == 0, "benchmark calls failed: \(failed)")
            return Result(
                calls: completed, concurrency: concurrency, wallSeconds: wall,
                simulatedSeconds: Double(world.nowNanoseconds) / 1e9,
                rpcsPerSecond: Double(completed) / wall, digest: world.trace.digestHex)
        }
    }
}
