/// A span of simulated time written as text in scenario files: "250ms", "3s",
/// "1.5s", "100us", "2m", "40ns".
public struct SimDuration: Codable, Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }
    public static func seconds(_ s: Double) -> SimDuration { SimDuration(nanoseconds: UInt64(s * 1e9)) }
    public static func < (a: SimDuration, b: SimDuration) -> Bool { a.nanoseconds < b.nanoseconds }

    static let units: [(String, Double)] = [("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]

    public init?(parsing text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in Self.units.sorted(by: { $0.0.count > $1.0.count }) where t.hasSuffix(suffix) {
            let number = t.dropLast(suffix.count)
            guard let v = Double(number), v >= 0, v.isFinite, v * scale < 1.8e19 else { return nil }
            self.nanoseconds = UInt64(v * scale)
            return
        }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        guard let d = SimDuration(parsing: text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(text)' is not a duration; write a number and a unit: ns, us, ms, s, m or h (for example 250ms or 1.5s)")
        }
        self = d
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    public var description: String {
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)s" }
        if nanoseconds % 1_000_000 == 0 { return "\(nanoseconds / 1_000_000)ms" }
        if nanoseconds % 1_000 == 0 { return "\(nanoseconds / 1_000)us" }
        return "\(nanoseconds)ns"
    }
}

/// A size in bytes written as text: "4096", "64KiB", "1GiB", "10MB".
public struct ByteSize: Codable, Hashable, Sendable {
    public var bytes: UInt64
    static let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40), ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000), ("B", 1)]

    public init(bytes: UInt64) { self.bytes = bytes }

    public init?(parsing text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let v = UInt64(t) {
            bytes = v
            return
        }
        for (suffix, scale) in Self.units where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v >= 0, v * Double(scale) < 1.8e19 else { return nil }
            bytes = UInt64(v * Double(scale))
            return
        }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(UInt64.self) {
            bytes = n
            return
        }
        let text = try c.decode(String.self)
        guard let s = ByteSize(parsing: text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(text)' is not a size; write bytes or a number with KiB, MiB, GiB, KB, MB or GB")
        }
        self = s
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(bytes)
    }
}

import Foundation
