import CisternCore
import NIOCore
/// The limits `TCPTransport` enforces beyond `TransportLimits`, with their units in
/// their names.
public enum TCPTransportLimits {
    /// Most calls waiting for a response on one outbound connection, and most requests
    /// one inbound connection runs at once. A call beyond it fails at once with
    /// `.unreachable` (the node is overloaded); a request beyond it gets an error response.
    public static let inFlightCallsPerConnectionMax = 4096
    /// How much one socket read takes at most: 1 MiB, so a page of a batch arrives in a
    /// few reads (NIO's default stops at 64 KiB); the size adapts down on idle links.
    public static let receiveBytesPerReadMax = 1 << 20
    static var receiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 16 << 10, maximum: receiveBytesPerReadMax)
    }
    /// The wait after the first failed connection attempt to a node; it doubles with
    /// each further failure, up to `reconnectBackoffNanosecondsMax`.
    public static let reconnectBackoffNanosecondsMin: UInt64 = 10_000_000
    /// The longest wait between connection attempts to a node.
    public static let reconnectBackoffNanosecondsMax: UInt64 = 1_000_000_000
    /// The reconnection waits as a policy (attempts are not bounded: calls end by
    /// their deadlines).
    static let reconnectRetry = RetryPolicy(attemptsMax: .max, firstDelayNanoseconds: reconnectBackoffNanosecondsMin, delayNanosecondsMax: reconnectBackoffNanosecondsMax)
    /// How long one TCP connect to one address may take.
    public static let connectTimeoutNanosecondsMax: UInt64 = 5_000_000_000
    /// The longest error text an error response carries (longer texts are cut).
    public static let errorTextBytesMax = 64 << 10
}
