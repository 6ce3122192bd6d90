// `import Cistern` gives the client, the batched I/O API and the native KV API, with
// the value types they use (node identities, inodes, layouts, KV errors).
@_exported import CisternCore
@_exported import CisternKV
@_exported import CisternMeta
@_exported import CisternRouting
@_exported import CisternMgmtd
@_exported import CisternStorage
