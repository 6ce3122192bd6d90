import ArgumentParser

@main
struct CisternCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cistern",
        abstract: "A distributed file system and KVCache store for LLM inference, simulation first.",
        subcommands: [Sim.self, Demo.self, Server.self, Up.self, Down.self, Admin.self, KV.self, FS.self, Bench.self, Soak.self, Doctor.self])
}
