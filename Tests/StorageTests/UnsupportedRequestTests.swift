import CisternCore
import CisternRouting
@testable import CisternStorage
import CisternWire
import Testing

/// A replica older than its client answers a request it does not know with the
/// decoder's own error; the client must see that at once (not retry it for half a
/// minute) so it can fall back to an older request.
@Suite struct UnsupportedRequestTests {
    @Test func anUnknownRequestTagBecomesUnsupportedAndOtherFailuresStayAsTheyAre() async throws {
        let request = StorageRequest.readRange(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunk: ChunkID(inode: 1, index: 0), offset: 0, length: 10)
        // What a server without readRange answers: its decoder's error, as the transport carries it.
        let old = WireError.unknownTag(type: "StorageRequest", tag: 10)
        do {
            _ = try await StorageClient.unsupportedIfUnknown(NodeID(7), request) { throw TransportError.remote(node: NodeID(7), message: "\(old)") }
            Issue.record("no error")
        } catch let e as StorageClientError {
            guard case .unsupported(let why) = e else { Issue.record("\(e)"); return }
            #expect(why.contains("older version") && why.contains("10"))
        }
        do {
            _ = try await StorageClient.unsupportedIfUnknown(NodeID(7), request) { throw TransportError.timeout(node: NodeID(7), nanoseconds: 5) }
            Issue.record("no error")
        } catch {
            #expect(error as? TransportError == .timeout(node: NodeID(7), nanoseconds: 5), "other failures are retried as before")
        }
    }
}
