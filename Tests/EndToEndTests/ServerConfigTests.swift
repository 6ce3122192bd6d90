import CisternServer
import Foundation
import Testing

@Suite struct ServerConfigTests {
    static let good = """
    node: { id: 101, name: s1, role: storage, listen: "127.0.0.1:9101" }
    cluster:
      mgmtd: [{ id: 1, address: "127.0.0.1:9001" }]
      meta: [{ id: 10, address: "localhost:9010" }]
    storage: { data_dir: /tmp/s1, targets: [10101, 10102], disk: auto }
    metrics: { listen: "127.0.0.1:9201" }
    log_level: info
    """

    @Test func aWildcardListenAddressIsAcceptedWithAdvertisedNames() throws {
        let c = try ServerConfig.parse(Self.good.replacingOccurrences(of: "listen: \"127.0.0.1:9101\" }", with: "listen: \"0.0.0.0:9101\", advertise: [\"s1.example.com:9101\"] }"))
        #expect(c.node.advertise == ["s1.example.com:9101"])
    }

    @Test func aValidConfigParses() throws {
        let c = try ServerConfig.parse(Self.good)
        #expect(c.node.role == .storage && c.storage?.targets == [10101, 10102] && c.cluster.meta?.first?.address == "localhost:9010")
        #expect(c.storage?.memoryCacheMiB == nil)
        let tier = try ServerConfig.parse(Self.good.replacingOccurrences(of: "disk: auto }", with: "disk: auto, memory_cache_mib: 0 }"))
        #expect(tier.storage?.memoryCacheMiB == 0)
    }

    /// Each mistake is refused with a message naming the place and the fix.
    @Test(arguments: [
        ("log_levle: info", "unknown key 'log_levle'"),
        ("storage: { data_dir: /tmp/s1, targets: [1], disk: floppy }", "storage.disk: unknown disk 'floppy'"),
        ("node: { id: 101, name: s1, role: storage, listen: \"nowhere\" }", "node.listen: 'nowhere' is not host:port"),
        ("node: { id: 101, name: s1, role: archive, listen: \"127.0.0.1:1\" }", "unknown role 'archive'"),
        ("kv: { kind: sqlite, path: /tmp/x }", "kv: the storage role keeps no KV"),
        ("storage: { data_dir: /tmp/s1, targets: [] }", "storage.targets: list at least one target id"),
        ("storage: { data_dir: /tmp/s1, targets: [1], memory_cache_mib: -5 }", "storage.memory_cache_mib: -5 is out of range; give 0"),
        ("auth: { cluster_key_file: \"\" }", "auth.cluster_key_file: name the cluster key file"),
        ("auth: { cluster_key_file: /k, admin_token_file: /t }", "auth.admin_token_file: only metadata servers"),
        ("auth: { cluster_key_file: /k, token_cache_seconds: -1 }", "auth.token_cache_seconds: -1.0 is outside"),
        ("auth: { cluster_key: /k }", "unknown key 'cluster_key'"),
        ("node: { id: 101, name: s1, role: storage, listen: \"0.0.0.0:9101\" }", "node.advertise: node.listen '0.0.0.0:9101' accepts on every address"),
        ("node: { id: 101, name: s1, role: storage, listen: \"[::]:9101\" }", "node.advertise: node.listen '[::]:9101' accepts on every address"),
    ])
    func mistakesAreNamed(change: String, expected: String) {
        // Replace the line that starts with the same key, or append.
        let key = change.prefix { $0 != ":" }
        var lines = Self.good.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if let i = lines.firstIndex(where: { $0.hasPrefix(key + ":") }) { lines[i] = change } else { lines.append(change) }
        do {
            _ = try ServerConfig.parse(lines.joined(separator: "\n"), path: "s1.yaml")
            Issue.record("accepted: \(change)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
            #expect("\(error)".hasPrefix("s1.yaml"), "\(error)")
        }
    }

    @Test func anAuthSectionNamesTheKeyAndOnlyMetadataServersTheAdminToken() throws {
        let storage = try ServerConfig.parse(Self.good + "\nauth: { cluster_key_file: /etc/cistern/cluster.key }")
        #expect(storage.auth?.clusterKeyFile == "/etc/cistern/cluster.key" && storage.auth?.adminTokenFile == nil)
        let meta = try ServerConfig.parse("""
        node: { id: 10, name: meta1, role: meta, listen: "127.0.0.1:9010" }
        cluster: { mgmtd: [{ id: 1, address: "127.0.0.1:9001" }] }
        kv: { kind: sqlite, path: /tmp/m.sqlite }
        auth: { cluster_key_file: /k, admin_token_file: /t, token_cache_seconds: 2 }
        """)
        #expect(meta.auth?.adminTokenFile == "/t" && meta.auth?.tokenCacheSeconds == 2)
        let mgmtd = try ServerConfig.parse("""
        node: { id: 1, name: m1, role: mgmtd, listen: "127.0.0.1:9001" }
        cluster: { mgmtd: [{ id: 1, address: "127.0.0.1:9001" }] }
        kv: { kind: sqlite, path: /tmp/m.sqlite }
        auth: { cluster_key_file: /k }
        """)
        #expect(mgmtd.auth?.clusterKeyFile == "/k")
        #expect(throws: ConfigError.self) {
            try ServerConfig.parse("""
            node: { id: 1, name: m1, role: mgmtd, listen: "127.0.0.1:9001" }
            cluster: { mgmtd: [{ id: 1, address: "127.0.0.1:9001" }] }
            kv: { kind: sqlite, path: /tmp/m.sqlite }
            auth: { cluster_key_file: /k, admin_token_file: /t }
            """)
        }
    }

    @Test func aMetaServerWithoutAKVSectionIsRefused() {
        let text = """
        node: { id: 10, name: meta1, role: meta, listen: "127.0.0.1:9010" }
        cluster: { mgmtd: [{ id: 1, address: "127.0.0.1:9001" }] }
        """
        #expect(throws: ConfigError.self) { try ServerConfig.parse(text) }
        do { _ = try ServerConfig.parse(text) } catch { #expect("\(error)".contains("needs a kv section")) }
    }

    @Test func aMasterNeedsItsSectionAndTheMetadataServersAndKeepsNoState() throws {
        let base = """
        node: { id: 90, name: master1, role: master, listen: "127.0.0.1:8080" }
        cluster: { mgmtd: [{ id: 1, address: "127.0.0.1:9001" }], meta: [{ id: 10, address: "127.0.0.1:9010" }] }
        """
        let ok = try ServerConfig.parse(base + "\nmaster: { admin_token_file: /etc/cistern/admin.token, idle_timeout_seconds: 10 }")
        #expect(ok.node.role == .master && ok.master?.idleTimeoutSeconds == 10)
        for (extra, expected) in [
            ("", "the master role needs a master section"),
            ("master: { admin_token_file: /x, connections_max: 0 }", "master.connections_max: 0 is outside"),
            ("master: { admin_token_file: /x }\nkv: { kind: sqlite, path: /tmp/x }", "the master keeps no state"),
            ("master: { admin_token_file: /x, admin_token: y }", "unknown key 'admin_token'"),
        ] {
            do {
                _ = try ServerConfig.parse(base + "\n" + extra)
                Issue.record("accepted: \(extra)")
            } catch {
                #expect("\(error)".contains(expected), "\(error)")
            }
        }
    }

    @Test func addressesParseWithIPv6AndRefuseBadPorts() throws {
        #expect(try ServerConfig.address("[::1]:9000").host == "::1")
        #expect(try ServerConfig.address("db.example:5432").port == 5432)
        #expect(throws: ConfigError.self) { try ServerConfig.address("host:99999") }
        #expect(throws: ConfigError.self) { try ServerConfig.address(":80") }
    }
}
