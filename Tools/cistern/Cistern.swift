import ArgumentParser

@main
struct Cistern: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cistern",
        abstract: "A distributed file system and KVCache store for LLM inference, simulation first.",
        subcommands: [Sim.self, Bench.self, Doctor.self])
}
