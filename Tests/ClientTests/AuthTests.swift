import CisternAuth
import CisternKV
import CisternMeta
import CisternRouting
import CisternStorage
import CisternWire
import Testing

/// The pure parts of tenants everywhere: capabilities, the trailer on the wire, and
/// the rules of who may use which paths, namespaces, operations and chunks.
@Suite struct AuthTests {
    static let key = try! CapabilityKey(secret: Array(0..<32))
    static let otherKey = try! CapabilityKey(secret: Array(1..<33))

    @Test func capabilitiesVerifyOnlyUnchangedAndUnderTheirKey() throws {
        let c = Self.key.mint(inode: 42, rights: .readWrite)
        #expect(c.mac.count == Capability.macBytes)
        #expect(Self.key.verify(c))
        #expect(!Self.otherKey.verify(c))
        #expect(!Self.key.verify(Capability(inode: 43, rights: c.rights, mac: c.mac)))
        #expect(!Self.key.verify(Capability(inode: 42, rights: .all, mac: c.mac)))
        for i in 0..<Capability.macBytes {
            var mac = c.mac
            mac[i] ^= 1
            #expect(!Self.key.verify(Capability(inode: 42, rights: c.rights, mac: mac)))
        }
        #expect(!Self.key.verify(Capability(inode: 42, rights: c.rights, mac: Array(c.mac.prefix(8)))))
        // Minting never grants the service right; only the key's service capability has it.
        #expect(!Self.key.mint(inode: 42, rights: .all).rights.contains(.service))
        #expect(Self.key.service.rights.contains(.service) && Self.key.verify(Self.key.service))
        // Same key, same capability (deterministic: the simulator's digests depend on it).
        #expect(try CapabilityKey(secret: Array(0..<32)).mint(inode: 42, rights: .readWrite) == c)
    }

    @Test func checkNeedsAValidCapabilityWithTheRightsForEveryInode() {
        let k = Self.key
        let rw7 = k.mint(inode: 7, rights: .readWrite), r8 = k.mint(inode: 8, rights: .read)
        #expect(k.check(needed: .read, inodes: [7, 8, 7], presented: [rw7, r8]) == nil)
        #expect(k.check(needed: .write, inodes: [7], presented: [rw7]) == nil)
        #expect(k.check(needed: .write, inodes: [8], presented: [r8])?.contains("allows read, not write") == true)
        #expect(k.check(needed: .read, inodes: [7, 9], presented: [rw7])?.contains("inode 9") == true)
        #expect(k.check(needed: .read, inodes: [7], presented: []) != nil)
        #expect(k.check(needed: .read, inodes: [7], presented: [Self.otherKey.mint(inode: 7, rights: .readWrite)]) != nil)
        #expect(k.check(needed: .service, inodes: [], presented: [rw7])?.contains("servers only") == true)
        #expect(k.check(needed: .service, inodes: [], presented: [k.service]) == nil)
        #expect(k.check(needed: .write, inodes: [1, 2, 3], presented: [k.service]) == nil)
        #expect(k.check(needed: .service, inodes: [], presented: [Self.otherKey.service]) != nil)
        #expect(k.check(needed: .read, inodes: [UInt64](), presented: []) == nil)
    }

    @Test func keysParseFromHexWithPreciseErrors() throws {
        let hex = CapabilityKey.generateHex()
        #expect(hex.count == 64)
        _ = try CapabilityKey(hex: hex + "\n")
        #expect(throws: AuthError.self) { try CapabilityKey(hex: "abc") }
        #expect(throws: AuthError.self) { try CapabilityKey(hex: String(repeating: "zz", count: 32)) }
        #expect(throws: AuthError.self) { try CapabilityKey(secret: [1, 2, 3]) }
        #expect(CapabilityKey.generateHex() != hex)
    }

    @Test func theTrailerRoundTripsAndIsBounded() throws {
        let t = AuthTrailer(token: "cst_abc", capabilities: [Self.key.mint(inode: 5, rights: .read), Self.key.service])
        let body: [UInt8] = [9, 9, 9]
        let bytes = t.appended(to: body)
        var r = WireReader(bytes)
        _ = try r.readRaw(count: 3)
        #expect(try AuthTrailer.read(after: &r) == t)
        var empty = WireReader(body)
        _ = try empty.readRaw(count: 3)
        #expect(try AuthTrailer.read(after: &empty) == nil)
        var junk = WireReader(t.appended(to: body) + [0])
        _ = try junk.readRaw(count: 3)
        #expect(throws: WireError.self) { try AuthTrailer.read(after: &junk) }
        let long = AuthTrailer(token: String(repeating: "t", count: AuthTrailer.tokenBytesMax + 1))
        #expect(throws: WireError.self) { try AuthTrailer(wireBytes: long.wireBytes()) }
        let many = AuthTrailer(capabilities: Array(repeating: Self.key.service, count: AuthTrailer.capabilitiesMax + 1))
        #expect(throws: WireError.self) { try AuthTrailer(wireBytes: many.wireBytes()) }
        // A capability with a short MAC does not even decode.
        #expect(throws: WireError.self) { try Capability(wireBytes: Capability(inode: 1, rights: .read, mac: [1]).wireBytes()) }
    }

    @Test func pathRules() {
        let allowed = ["/tenants/t", "/tenants/t/", "/tenants/t/x", "/tenants/t/x/y/z", "//tenants//t//x"]
        let refused = ["/", "/tenants", "/tenants/", "/tenants/tt", "/tenants/tt/x", "/tenants/u/x", "/x/tenants/t", "tenants/t/x",
                       "/tenants/t/../u", "/tenants/t/./x", "/.kvcache/t.kv/pages.0", "", "/Tenants/t"]
        for p in allowed { #expect(Access.mayUse(path: p, tenant: "t"), "\(p)") }
        for p in refused { #expect(!Access.mayUse(path: p, tenant: "t"), "\(p)") }
        for p in allowed + refused { #expect(Access.mayUse(path: p, tenant: Access.admin), "\(p)") }
    }

    @Test func namespaceRules() {
        #expect(Access.owner(ofNamespace: "alpha.kv") == "alpha")
        #expect(Access.owner(ofNamespace: "alpha.kv.v2") == "alpha")
        #expect(Access.owner(ofNamespace: "plain") == Access.admin)
        #expect(Access.owner(ofNamespace: ".hidden") == Access.admin)
        #expect(Access.mayUse(namespace: "alpha.kv", tenant: "alpha"))
        #expect(!Access.mayUse(namespace: "alpha.kv", tenant: "beta"))
        #expect(!Access.mayUse(namespace: "alphabet.kv", tenant: "alpha"))
        #expect(!Access.mayUse(namespace: "plain", tenant: "alpha"))
        #expect(Access.mayUse(namespace: "anything.at.all", tenant: Access.admin))
    }

    @Test func requestRecordsAreScopedPerTenant() {
        #expect(Access.scopedClient(77, tenant: Access.admin) == 77)
        let a = Access.scopedClient(77, tenant: "alpha"), b = Access.scopedClient(77, tenant: "beta")
        #expect(a != 77 && b != 77 && a != b)
        #expect(Access.scopedClient(77, tenant: "alpha") == a)
        #expect(Access.scopedClient(78, tenant: "alpha") != a)
    }

    @Test func metadataOperationRules() {
        let k = Self.key
        let t = Caller(tenant: "t")
        let mine = "/tenants/t/f", theirs = "/tenants/u/f"
        let ops: [(MetaOp, Bool)] = [
            (.stat(mine), true), (.stat(theirs), false), (.create(mine, mode: 0o644, exclusive: true), true), (.create(theirs, mode: 0o644, exclusive: true), false),
            (.mkdir("/tenants/t/d", parents: true), true), (.mkdir("/tenants/u/d", parents: true), false),
            (.symlink(mine, target: theirs), true), (.symlink(theirs, target: mine), false),
            (.link(mine, "/tenants/t/g"), true), (.link(theirs, mine), false), (.link(mine, theirs), false),
            (.remove(mine, recursive: true), true), (.remove("/tenants", recursive: true), false),
            (.rename(mine, "/tenants/t/g"), true), (.rename(theirs, mine), false), (.rename(mine, theirs), false),
            (.list("/tenants/t", after: nil, limit: 10), true), (.list("/tenants", after: nil, limit: 10), false), (.list("/", after: nil, limit: 10), false),
            (.open(mine, write: true, session: 1), true), (.open(theirs, write: false, session: 1), false),
            (.setattr(mine, AttributeChange(mode: 0o600)), true), (.setattr(theirs, AttributeChange(mode: 0o600)), false),
            (.truncate(mine, length: 0), true), (.truncate(theirs, length: 0), false),
            (.statfs, true), (.keepAlive, true),
        ]
        for (op, ok) in ops {
            #expect((MetaAccess.refusal(op, caller: t, presented: [], key: k) == nil) == ok, "\(op)")
            #expect(MetaAccess.refusal(op, caller: .admin, presented: [], key: k) == nil, "\(op)")
        }
        // Inode-addressed operations need a capability for each inode.
        let cap = k.mint(inode: 5, rights: .readWrite)
        #expect(MetaAccess.refusal(.batchStat([InodeID(5)]), caller: t, presented: [cap], key: k) == nil)
        #expect(MetaAccess.refusal(.batchStat([InodeID(5), InodeID(6)]), caller: t, presented: [cap], key: k) != nil)
        #expect(MetaAccess.refusal(.close(InodeID(5), session: 1, length: 3), caller: t, presented: [cap], key: k) == nil)
        #expect(MetaAccess.refusal(.close(InodeID(6), session: 1, length: 3), caller: t, presented: [cap], key: k) != nil)
        #expect(MetaAccess.refusal(.sync(InodeID(5), length: 3), caller: t, presented: [k.mint(inode: 5, rights: .read)], key: k) != nil)
        #expect(MetaAccess.refusal(.sync(InodeID(6), length: 3), caller: .admin, presented: [], key: k) == nil)
    }

    @Test func indexRequestRules() {
        let t = Caller(tenant: "t")
        func allowed(_ r: KVRequest, _ c: Caller = Caller(tenant: "t")) -> KVRequest? {
            if case .success(let a) = KVAccess.authorize(r, caller: c) { return a }
            return nil
        }
        // A tenant's creates become its own, charged to its quota.
        #expect(allowed(.createNamespace(name: "t.kv", pageBytes: 4_096, capacityPages: 8, files: 1, durability: .cache))
            == .createOwnedNamespace(owner: "t", name: "t.kv", pageBytes: 4_096, capacityPages: 8, files: 1, durability: .cache))
        #expect(allowed(.createNamespace(name: "u.kv", pageBytes: 4_096, capacityPages: 8, files: 1, durability: .cache)) == nil)
        #expect(allowed(.createNamespace(name: "plain", pageBytes: 4_096, capacityPages: 8, files: 1, durability: .cache)) == nil)
        #expect(allowed(.createOwnedNamespace(owner: "u", name: "t.kv", pageBytes: 4_096, capacityPages: 8, files: 1, durability: .cache)) == nil)
        #expect(allowed(.createOwnedNamespace(owner: "t", name: "u.kv", pageBytes: 4_096, capacityPages: 8, files: 1, durability: .cache)) == nil)
        let onNamespace: (String) -> [KVRequest] = { n in
            [.describe(name: n), .reserve(name: n, keys: ["k"]), .confirm(name: n, items: []), .abort(name: n, slots: [], tokens: []),
             .lookup(name: n, keys: ["k"], leaseNanoseconds: 1), .exists(name: n, keys: ["k"]), .delete(name: n, keys: ["k"]),
             .usage(name: n), .drop(name: n), .audit(name: n)]
        }
        for r in onNamespace("t.kv") { #expect(allowed(r) == r, "\(r)") }
        for r in onNamespace("u.kv") + onNamespace("plain") {
            #expect(allowed(r) == nil, "\(r)")
            #expect(allowed(r, .admin) == r, "\(r)")
        }
        #expect(allowed(.list) == .list)
        for r: KVRequest in [.tenant(.list), .tenant(.info(name: "t")), .tenant(.authenticate(hash: [])), .tenant(.create(name: "x", quota: TenantQuota(bytes: 1, pages: 1), capacityBytes: 1))] {
            #expect(allowed(r, t) == nil, "\(r)")
            #expect(allowed(r, .admin) == r, "\(r)")
        }
    }

    @Test func storageRequestsNameTheirInodesAndRights() throws {
        let c = ChunkID(inode: 9, index: 1), d = ChunkID(inode: 10, index: 0)
        let tag = ClientTag(client: 1, channel: 0, sequence: 1)
        let w = StorageRequest.write(WriteArgs(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunk: c, tag: tag))
        #expect(w.inodes == [9] && w.neededRights == .write)
        let wb = StorageRequest.writeBatch(WriteBatchArgs(target: TargetID(1), chain: ChainID(1), chainVersion: 1, tag: tag, durable: true,
                                                          items: [WriteBatchItem(chunk: c, length: 1), WriteBatchItem(chunk: d, length: 1)]))
        #expect(wb.inodes == [9, 10] && wb.neededRights == .write)
        #expect(StorageRequest.readBatch(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunks: [c, d]).inodes == [9, 10])
        #expect(StorageRequest.read(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunk: c).neededRights == .read)
        #expect(StorageRequest.statChunk(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunk: c).neededRights == .read)
        for r: StorageRequest in [.removeChunk(target: TargetID(1), chainVersion: 1, chunk: c), .dumpMeta(target: TargetID(1), chainVersion: 1),
                                  .syncDone(target: TargetID(1), chainVersion: 1), .dumpMetaPage(target: TargetID(1), chainVersion: 1, after: nil, limit: 1)] {
            #expect(r.neededRights == .service && r.inodes.isEmpty, "\(r)")
        }
        // The trailer rides behind the request: old decoders read the request alone.
        let trailer = AuthTrailer(capabilities: [Self.key.mint(inode: 9, rights: .read)])
        let m = StorageRequest.read(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunk: c).message(trailer: trailer)
        #expect(try StorageRequest(m) == .read(target: TargetID(1), chain: ChainID(1), chainVersion: 1, chunk: c))
        #expect(try StorageRequest.decode(m).1 == trailer)
        #expect(try StorageReply(wireBytes: StorageReply.forbidden("x").wireBytes()) == .forbidden("x"))
    }

    @Test func walletsAreBoundedAndServersCarryTheServiceCapability() {
        let w = CapabilityWallet(capacity: 4)
        for i in 1...10 { w.insert([Self.key.mint(inode: UInt64(i), rights: .read)]) }
        #expect(w.count == 4)
        #expect(w.capability(for: 10) != nil && w.capability(for: 1) == nil)
        #expect(w.capabilities(for: [10, 10, 9]).count == 2)
        for i in 11...200 { w.insert([Self.key.mint(inode: UInt64(i), rights: .read)]) }
        #expect(w.count == 4 && w.capability(for: 200) != nil)
        let server = CapabilityWallet(serviceOf: Self.key)
        #expect(server.capabilities(for: [1, 2, 3]) == [Self.key.service])
    }
}
