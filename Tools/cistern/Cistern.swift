import ArgumentParser
import CisternAuth

@main
struct CisternCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cistern",
        abstract: "A distributed file system and KVCache store for LLM inference, simulation first.",
        subcommands: [Sim.self, Demo.self, Server.self, Up.self, Down.self, Admin.self, KV.self, FS.self, Mount.self, Umount.self, Bench.self, Soak.self, Doctor.self, Keygen.self, Operator.self, Webhook.self])
}

/// `cistern keygen`: a new cluster key for `auth.cluster_key_file`.
struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a new cluster key (64 hex digits) for auth.cluster_key_file.",
        discussion: "Every metadata and storage server of a cluster needs the same key: cistern keygen > cluster.key; chmod 600 cluster.key")

    func run() throws {
        print(CapabilityKey.generateHex())
    }
}
