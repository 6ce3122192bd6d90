import CisternCore
import CisternWire

/// The services an `RDMATransport` serves on its TCP side for itself. Application
/// services must not use these numbers.
enum RDMAServices {
    /// Connection setup and teardown (`RDMAControlMethod`).
    static let control = ServiceID(0xFFF0)
    /// Calls whose bulk may travel by RDMA: the TCP message's header is a
    /// `RDMARequestEnvelope` naming the real service.
    static let data = ServiceID(0xFFF1)
}

/// The methods of `RDMAServices.control`.
enum RDMAControlMethod: UInt16 {
    /// Header: the caller's `QueuePairInfo`. Response header: the server's.
    case connect = 1
    /// Header: `RDMAConnectionRef`. Drops the server's side of the connection.
    case disconnect = 2
}

/// Names one connection on the serving side (its id; the caller is the request's sender).
struct RDMAConnectionRef: Equatable, Sendable, WireCodable {
    var connectionID: UInt64

    func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in w.writeVarint(connectionID) }
    }

    init(connectionID: UInt64) { self.connectionID = connectionID }

    init(from reader: inout WireReader) throws(WireError) {
        connectionID = try reader.readMessage("RDMAConnectionRef") { r throws(WireError) in try r.readVarint("connection id") }
    }
}

/// Where a message's bulk bytes are.
enum BulkPlacement: Equatable, Sendable, WireCodable {
    /// In the TCP message's bulk field.
    case inline
    /// In the peer's registered buffer for this connection, `length` bytes at `offset`
    /// from its start, with CRC-32C `checksum`. `token` names a response slot the caller
    /// must release once it has read it (0 for request bulk).
    case remote(offset: UInt64, length: UInt64, checksum: UInt32, token: UInt64)

    func encode(to writer: inout WireWriter) {
        switch self {
        case .inline:
            writer.writeVarint(0)
        case .remote(let offset, let length, let checksum, let token):
            writer.writeVarint(1)
            writer.writeMessage { w in
                w.writeVarint(offset)
                w.writeVarint(length)
                w.writeUInt32LE(checksum)
                w.writeVarint(token)
            }
        }
    }

    init(from reader: inout WireReader) throws(WireError) {
        let tag = try reader.readVarint("BulkPlacement tag")
        switch tag {
        case 0:
            self = .inline
        case 1:
            self = try reader.readMessage("BulkPlacement.remote") { r throws(WireError) in
                let offset = try r.readVarint("bulk offset")
                let length = try r.readVarint("bulk length")
                guard length > 0, !offset.addingReportingOverflow(length).overflow else {
                    throw WireError.invalidValue(what: "remote bulk", detail: "offset \(offset) length \(length)")
                }
                return .remote(
                    offset: offset, length: length, checksum: try r.readUInt32LE("bulk checksum"), token: try r.readVarint("token"))
            }
        default:
            throw .unknownTag(type: "BulkPlacement", tag: tag)
        }
    }
}

/// The header of a call to `RDMAServices.data`: the real service and header, where
/// the bulk is, how long the caller still waits, and the response slots it has read.
struct RDMARequestEnvelope: Equatable, Sendable, WireCodable {
    var connectionID: UInt64
    var service: ServiceID
    var header: [UInt8]
    var bulk: BulkPlacement
    /// The caller's time left when it sent the call: the serving side keeps a response
    /// slot this long (plus a grace period) unless released earlier.
    var remainingNanoseconds: UInt64
    /// Response slot tokens the caller has finished reading.
    var releasedTokens: [UInt64]

    func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeVarint(connectionID)
            w.writeVarint(UInt64(service.rawValue))
            w.writeBytes(header)
            w.write(bulk)
            w.writeVarint(remainingNanoseconds)
            w.write(releasedTokens)
        }
    }

    init(
        connectionID: UInt64, service: ServiceID, header: [UInt8], bulk: BulkPlacement, remainingNanoseconds: UInt64,
        releasedTokens: [UInt64]
    ) {
        self.connectionID = connectionID
        self.service = service
        self.header = header
        self.bulk = bulk
        self.remainingNanoseconds = remainingNanoseconds
        self.releasedTokens = releasedTokens
    }

    init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("RDMARequestEnvelope") { r throws(WireError) in
            RDMARequestEnvelope(
                connectionID: try r.readVarint("connection id"), service: ServiceID(try UInt16(from: &r)),
                header: try r.readBytes("header"), bulk: try r.read(BulkPlacement.self),
                remainingNanoseconds: try r.readVarint("remaining nanoseconds"), releasedTokens: try r.read([UInt64].self))
        }
    }
}

/// How the serving side disposed of an enveloped call.
enum RDMACallStatus: UInt8, WireEnum {
    /// The handler ran; the response is in the envelope.
    case ok = 0
    /// The node does not serve the requested service; nothing ran.
    case noSuchService = 1
    /// The serving side has no such connection (it restarted, or dropped it): nothing
    /// ran; the caller should reconnect and may resend over TCP.
    case unknownConnection = 2
    /// The request's bulk could not be taken (out of range, or its checksum did not
    /// match): nothing ran; the caller may resend its bulk over TCP.
    case bulkRejected = 3
}

/// The header of a response from `RDMAServices.data`.
struct RDMAResponseEnvelope: Equatable, Sendable, WireCodable {
    var status: RDMACallStatus
    var header: [UInt8]
    var bulk: BulkPlacement
    /// For a status other than `.ok`: why.
    var detail: String

    func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(status)
            w.writeBytes(header)
            w.write(bulk)
            w.writeString(detail)
        }
    }

    init(status: RDMACallStatus, header: [UInt8] = [], bulk: BulkPlacement = .inline, detail: String = "") {
        self.status = status
        self.header = header
        self.bulk = bulk
        self.detail = detail
    }

    init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("RDMAResponseEnvelope") { r throws(WireError) in
            RDMAResponseEnvelope(
                status: try r.read(RDMACallStatus.self), header: try r.readBytes("header"), bulk: try r.read(BulkPlacement.self),
                detail: try r.readString("detail"))
        }
    }
}
