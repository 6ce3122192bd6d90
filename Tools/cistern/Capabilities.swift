enum Capabilities { static func report() -> [String] { ["(probes pending)"] } }
