import ArgumentParser

/// `cistern doctor`: what this machine offers the production seams.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report which production I/O paths this machine supports (io_uring, RDMA).")

    func run() throws {
        for line in Capabilities.report() { print(line) }
    }
}
