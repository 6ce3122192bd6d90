import Cistern
import CisternKV
import CisternMeta
import Foundation
import Hummingbird
import NIOCore

/// The master's JSON bodies (the OpenAPI document `Sources/CisternMaster/openapi.yaml`
/// describes each; field names are the document's).
enum API {
    struct ErrorBody: Codable {
        struct Detail: Codable {
            var code: String
            var message: String
        }
        var error: Detail
    }

    struct Health: Codable {
        var status: String
        var routingVersion: UInt64
        var storageTargets: Int
    }

    struct WhoAmI: Codable { var tenant: String }

    struct TenantCreate: Codable {
        var name: String
        var quotaBytes: UInt64
        var quotaPages: UInt64
    }

    struct QuotaSet: Codable {
        var quotaBytes: UInt64
        var quotaPages: UInt64
    }

    struct Tenant: Codable {
        var name: String
        var quotaBytes: UInt64
        var quotaPages: UInt64
        var usedBytes: UInt64
        var usedPages: UInt64
        var namespaces: [String]
        var tokens: [String]

        init(_ t: TenantInfo) {
            name = t.name
            quotaBytes = t.quota.bytes
            quotaPages = t.quota.pages
            usedBytes = t.used.bytes
            usedPages = t.used.pages
            namespaces = t.namespaces.compactMap { TenantNaming.tenantName(indexName: $0, tenant: t.name) }
            tokens = t.tokenIDs
        }
    }

    struct TenantList: Codable {
        var tenants: [Tenant]
        var capacityBytes: UInt64
        var quotaBytesTotal: UInt64
    }

    struct TokenCreate: Codable { var id: String? }

    struct TokenIssued: Codable {
        var id: String
        var tenant: String
        var token: String
    }

    struct NamespaceCreate: Codable {
        var name: String
        var pageBytes: UInt32
        var capacityPages: UInt64
        var durability: String?
    }

    struct Namespace: Codable {
        var name: String
        var pageBytes: UInt32
        var capacityPages: UInt64
        var durability: String
        var usage: Usage?
    }

    struct Usage: Codable {
        var confirmedPages: UInt64
        var reservedPages: UInt64
        var freeSlots: UInt64
        var usedSlots: UInt64
    }

    struct NamespaceList: Codable { var namespaces: [String] }

    struct Keys: Codable { var keys: [String] }

    struct Exists: Codable {
        var present: [Bool]
        var consecutiveHits: Int
    }

    struct PutResult: Codable {
        var key: String
        var outcome: String
        var detail: String?
    }

    struct PutResults: Codable { var results: [PutResult] }

    struct Deleted: Codable { var deleted: Int }

    struct Reservation: Codable {
        var key: String
        var outcome: String
        var slot: UInt64?
        var token: UInt64?
        var fileInode: UInt64?
        var offsetBytes: UInt64?
    }

    struct Reservations: Codable {
        var pageBytes: UInt32
        var reservations: [Reservation]
    }

    struct ConfirmItem: Codable {
        var key: String
        var slot: UInt64
        var token: UInt64
        var length: UInt32
        var checksum: UInt32
    }

    struct ConfirmRequest: Codable { var items: [ConfirmItem] }

    struct ConfirmResults: Codable { var outcomes: [String] }

    struct AbortItem: Codable {
        var slot: UInt64
        var token: UInt64
    }

    struct AbortRequest: Codable { var items: [AbortItem] }

    struct FileCreate: Codable {
        var path: String
        var type: String
        var mode: UInt32?
    }

    struct FileStat: Codable {
        var path: String
        var type: String
        var mode: UInt32
        var length: UInt64
        var nlink: UInt32
        var mtimeNanoseconds: UInt64
    }

    struct Entry: Codable {
        var name: String
        var type: String
    }

    struct Listing: Codable {
        var path: String
        var entries: [Entry]
    }
}

/// A refused request: an HTTP status, a stable code and a message that names the fix.
struct APIError: HTTPResponseError, CustomStringConvertible {
    let status: HTTPResponse.Status
    let code: String
    let message: String

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    var description: String { "\(status.code) \(code): \(message)" }

    /// 507: a disk or store is full.
    static let insufficientStorage = HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = (try? JSONEncoder().encode(API.ErrorBody(error: .init(code: code, message: message)))) ?? Data()
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// Every error a handler can meet, mapped onto a status and a stable code.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as TenantError: return from(tenant: e)
        case let e as KVCacheError: return from(kv: e)
        case let e as CisternError:
            switch e {
            case .kv(let k): return from(kv: k)
            case .meta(let m): return from(meta: m)
            case .storage(let s): return APIError(.serviceUnavailable, "storage_unavailable", "\(s)")
            case .invalidArgument(let d): return APIError(.badRequest, "invalid_argument", d)
            }
        case let e as MetaClientError: return from(meta: e)
        case let e as MetaError: return from(meta: .refused(MetaErrorCode(e), e.description))
        case let e as DecodingError: return APIError(.badRequest, "malformed_body", "the JSON body does not match the schema: \(describe(e))")
        case is NIOTooManyBytesError: return APIError(.contentTooLarge, "body_too_large", "the body is larger than this endpoint accepts; split the batch")
        default: return APIError(.serviceUnavailable, "unavailable", "\(error)")
        }
    }

    static func from(tenant e: TenantError) -> APIError {
        let m = e.description
        switch e {
        case .invalidName: return APIError(.badRequest, "invalid_tenant_name", m)
        case .noSuchTenant: return APIError(.notFound, "no_such_tenant", m)
        case .tenantExists: return APIError(.conflict, "tenant_exists", m)
        case .notEmpty: return APIError(.conflict, "tenant_not_empty", m)
        case .unauthenticated: return APIError(.unauthorized, "unauthenticated", m)
        case .forbidden: return APIError(.forbidden, "forbidden", m)
        case .tooManyTokens: return APIError(.conflict, "too_many_tokens", m)
        case .noSuchToken: return APIError(.notFound, "no_such_token", m)
        case .quotaExceeded: return APIError(.conflict, "quota_exceeded", m)
        case .overcommitted: return APIError(.conflict, "quota_overcommitted", m)
        case .quotaBelowUse: return APIError(.conflict, "quota_below_use", m)
        case .limit: return APIError(.badRequest, "limit", m)
        }
    }

    static func from(kv e: KVCacheError) -> APIError {
        let m = e.description
        switch e {
        case .invalidNamespace: return APIError(.badRequest, "invalid_namespace_name", m)
        case .noSuchNamespace: return APIError(.notFound, "no_such_namespace", m)
        case .namespaceMismatch: return APIError(.conflict, "namespace_exists", m)
        case .invalidKey: return APIError(.badRequest, "invalid_key", m)
        case .batchTooLarge: return APIError(.badRequest, "batch_too_large", m)
        case .pageTooLarge: return APIError(.contentTooLarge, "page_too_large", m)
        case .invalidConfig: return APIError(.badRequest, "invalid_namespace_config", m)
        case .unavailable: return APIError(.serviceUnavailable, "index_unavailable", m)
        case .noSpace: return APIError(APIError.insufficientStorage, "no_space", m)
        case .tenant(let t): return from(tenant: t)
        }
    }

    static func from(meta e: MetaClientError) -> APIError {
        switch e {
        case .exhausted: return APIError(.serviceUnavailable, "metadata_unavailable", e.description)
        case .refused(let code, let text):
            switch code {
            case .notFound: return APIError(.notFound, "not_found", text)
            case .exists: return APIError(.conflict, "exists", text)
            case .notADirectory: return APIError(.conflict, "not_a_directory", text)
            case .isADirectory: return APIError(.conflict, "is_a_directory", text)
            case .notEmpty: return APIError(.conflict, "not_empty", text)
            case .invalidPath: return APIError(.badRequest, "invalid_path", text)
            case .cycle: return APIError(.badRequest, "cycle", text)
            case .tooLarge: return APIError(.contentTooLarge, "too_large", text)
            case .store: return APIError(.serviceUnavailable, "metadata_store", text)
            case .noSpace: return APIError(APIError.insufficientStorage, "no_space", text)
            case .permissionDenied: return APIError(.forbidden, "forbidden", text)
            }
        }
    }

    static func describe(_ e: DecodingError) -> String {
        func path(_ c: [any CodingKey]) -> String { c.isEmpty ? "the body" : "'" + c.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") + "'" }
        switch e {
        case .keyNotFound(let k, let c): return "missing field '\(k.stringValue)' in \(path(c.codingPath))"
        case .typeMismatch(let t, let c): return "\(path(c.codingPath)) should be \(t)"
        case .valueNotFound(let t, let c): return "\(path(c.codingPath)) should be \(t), not null"
        case .dataCorrupted(let c): return "\(path(c.codingPath)): \(c.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}

/// The framing of binary batch bodies: records of (u32 LE key length, key bytes, u32 LE
/// value length, value bytes); in a batch-get answer a missing page has length
/// 0xFFFF_FFFF and no bytes.
public enum PageFraming {
    public static let missing: UInt32 = 0xFFFF_FFFF

    static func decode(_ buffer: ByteBuffer, keysMax: Int) throws(APIError) -> [(key: String, bytes: [UInt8])] {
        var b = buffer
        var out: [(key: String, bytes: [UInt8])] = []
        while b.readableBytes > 0 {
            guard out.count < keysMax else { throw APIError(.badRequest, "batch_too_large", "a batch holds at most \(keysMax) pages; split it") }
            guard let kl = b.readInteger(endianness: .little, as: UInt32.self), let key = b.readString(length: Int(kl)),
                  let vl = b.readInteger(endianness: .little, as: UInt32.self), vl != missing, let value = b.readBytes(length: Int(vl)) else {
                throw APIError(.badRequest, "malformed_body", "record \(out.count) of the batch is truncated: each is a u32 LE key length, the key, a u32 LE page length, the page")
            }
            out.append((key, value))
        }
        return out
    }

    public static func encode(_ items: [(key: String, bytes: [UInt8]?)]) -> ByteBuffer {
        var b = ByteBuffer()
        b.reserveCapacity(items.reduce(0) { $0 + 8 + $1.key.utf8.count + ($1.bytes?.count ?? 0) })
        for (key, bytes) in items {
            b.writeInteger(UInt32(key.utf8.count), endianness: .little)
            b.writeString(key)
            if let bytes {
                b.writeInteger(UInt32(bytes.count), endianness: .little)
                b.writeBytes(bytes)
            } else {
                b.writeInteger(missing, endianness: .little)
            }
        }
        return b
    }
}
