// Users of the server library (the CLI, tests) get the configuration, discovery and
// client session types with it.
@_exported import CisternConnect
