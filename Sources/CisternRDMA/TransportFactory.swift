import CisternCore
import CisternNIO
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Picks the best transport this process can use: `RDMATransport` when an RDMA device
/// exists and opens, otherwise `TCPTransport`.
///
/// Promises:
/// - The choice is made once per factory, on first use: `RDMAProbe.devices()` (or the
///   probe given) must list a device (the configured one, if named) and
///   `RDMADevice.open` must succeed on it. The outcome is logged exactly once: which
///   device is used, or "no RDMA device (reason); using TCP".
/// - `makeTransport` never throws for a missing or broken device: it returns the TCP
///   transport instead (logging why, once per failure, if the device chosen at first
///   use no longer opens).
public final class TransportFactory: Sendable {
    /// What the factory decided.
    public enum Choice: Sendable, Equatable, CustomStringConvertible {
        /// RDMA verbs on the named device.
        case rdma(device: String)
        /// TCP, because of `reason`.
        case tcp(reason: String)

        /// "rdma (device)" or "tcp (no RDMA device: reason)".
        public var description: String {
            switch self {
            case .rdma(let device): return "rdma (\(device))"
            case .tcp(let reason): return "tcp (no RDMA device: \(reason))"
            }
        }
    }

    private let runtime: any Runtime
    private let logger: Logger
    private let configuration: RDMATransport.Configuration
    private let probe: @Sendable () -> RDMADeviceList
    private let decided = Mutex<Choice?>(nil)

    /// A factory for transports of `runtime`'s node.
    /// - Parameters:
    ///   - runtime: the runtime every transport gets.
    ///   - logger: where the choice is logged; `runtime.logger("transport")` when nil.
    ///   - rdma: the RDMA transport's configuration (device, port, GID index, sizes).
    ///   - probe: lists the RDMA devices; `RDMAProbe.devices` unless a test substitutes one.
    public init(
        runtime: any Runtime, logger: Logger? = nil, rdma: RDMATransport.Configuration = RDMATransport.Configuration(),
        probe: @escaping @Sendable () -> RDMADeviceList = { RDMAProbe.devices() }
    ) {
        self.runtime = runtime
        self.logger = logger ?? runtime.logger("transport")
        self.configuration = rdma
        self.probe = probe
    }

    /// The factory's choice, made (and logged) on the first call.
    public func choice() -> Choice {
        // Decide under the lock so concurrent first calls probe and log once.
        let (choice, isNew): (Choice, Bool) = decided.withLock { d in
            if let d { return (d, false) }
            let made = decide()
            d = made
            return (made, true)
        }
        if isNew {
            switch choice {
            case .rdma(let device):
                logger.info("RDMA device \(device) port \(configuration.port) found; using RDMA verbs for bulk transfers")
            case .tcp(let reason):
                logger.notice("no RDMA device (\(reason)); using TCP")
            }
        }
        return choice
    }

    /// A transport for `localNode` listening on `listen` (call `start()` on it): an
    /// `RDMATransport` when `choice()` is `.rdma` and the device opens, else a
    /// `TCPTransport`.
    public func makeTransport(
        localNode: NodeID, listen: NodeAddress, resolver: any CisternCore.Resolver,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) -> any ListeningTransport {
        if case .rdma(let device) = choice() {
            var configuration = self.configuration
            configuration.deviceName = device
            do throws(RDMAError) {
                return try RDMATransport(
                    localNode: localNode, listen: listen, resolver: resolver, runtime: runtime, configuration: configuration,
                    group: group)
            } catch {
                logger.warning("RDMA device \(device) did not open for \(localNode) (\(error)); using TCP")
            }
        }
        return TCPTransport(localNode: localNode, listen: listen, resolver: resolver, runtime: runtime, group: group)
    }

    private func decide() -> Choice {
        let names: [String]
        switch probe() {
        case .none(let reason):
            return .tcp(reason: reason)
        case .devices(let found):
            names = found
        }
        let wanted = configuration.deviceName ?? names.first ?? ""
        guard names.contains(wanted) else {
            return .tcp(reason: RDMAError.noSuchDevice(name: wanted, available: names).description)
        }
        do throws(RDMAError) {
            // Opened only to check it; it is released here (no completion thread was
            // started), and each transport opens the device for itself.
            let device = try RDMADevice.open(name: wanted, port: configuration.port, gidIndex: configuration.gidIndex)
            return .rdma(device: device.name)
        } catch {
            return .tcp(reason: error.description)
        }
    }
}
