/// The chain state machine: given a chain and the local states its targets'
/// storage nodes report, the chain's next public state (3FS's transition table,
/// made precise). Pure: no time, no I/O, no randomness.
///
/// ## Step 1: each target's next public state
///
/// A target missing from `local` counts as local `.offline`. "Serving after
/// this step" means a target whose *new* state is serving.
///
/// | Public  | Local            | Next public state                                             |
/// | :------ | :--------------- | :------------------------------------------------------------ |
/// | serving | upToDate, online | serving                                                       |
/// | serving | offline          | lastsrv if no target is serving after this step and the chain has no lastsrv target after it; otherwise offline |
/// | syncing | upToDate         | serving                                                       |
/// | syncing | online           | syncing if some target is serving after this step, else waiting |
/// | syncing | offline          | offline                                                       |
/// | waiting | upToDate         | waiting (a waiting target never becomes serving without syncing) |
/// | waiting | online           | syncing if some target is serving after this step and no other target is syncing after it, else waiting |
/// | waiting | offline          | offline                                                       |
/// | lastsrv | upToDate, online | serving (it holds the latest data)                            |
/// | lastsrv | offline          | lastsrv                                                       |
/// | offline | upToDate, online | waiting                                                       |
/// | offline | offline          | offline                                                       |
///
/// Two choices make the table exact and independent of evaluation order:
///
/// 1. **One lastsrv.** When every serving target goes offline at once and no
///    target stays or becomes serving, exactly one of them becomes lastsrv:
///    the first of them in the old chain order (the head, which holds a superset
///    of the others' writes); the others become offline. A chain that already
///    has a lastsrv target (which stays lastsrv while offline) gets no second
///    one: its serving targets that go offline become offline.
/// 2. **One syncing.** At most one target per chain is syncing. The candidates
///    are the syncing and waiting targets whose local state is online, and only
///    when some target is serving after this step. An existing syncing target
///    wins over a waiting one; among equals the first in the old chain order
///    wins. The other candidates become (or stay) waiting.
///
/// The outcomes are decided in three passes over the old chain: first every
/// outcome that depends on the target alone (serving, lastsrv staying lastsrv,
/// offline, waiting), then serving-to-lastsrv/offline, then syncing/waiting.
///
/// ## Step 2: order
///
/// Serving targets first, then syncing, waiting, lastsrv, offline; within each
/// group the old relative order is kept. Offline targets thus move to the end,
/// and a recovering target rejoins right after the serving targets (at the
/// tail of the writes).
///
/// ## Guarantees
///
/// - The result has the same targets (ids) as the input, in the order above.
/// - Its `version` is the old version + 1 if and only if the target list
///   (order or any state) changed; otherwise the chain is returned unchanged.
/// - A target whose local state is offline is never serving or syncing after.
/// - A target becomes serving only from serving, from syncing with local
///   upToDate, or from lastsrv; never from waiting or offline.
/// - If the old chain had a serving or lastsrv target, the new one has one too
///   (the latest data never disappears from the chain's view).
/// - At most one target is syncing.
/// - From a chain with at most one lastsrv target and none while a target is
///   serving (every chain reached by `next` from an all-serving chain is such
///   a chain), the result keeps that property.
/// - Applying `next` repeatedly with unchanged local states reaches a fixpoint
///   after at most two changes (e.g. offline -> waiting -> syncing).
public enum ChainStateMachine {
    /// The chain's next state under the local states `local` (see the type's
    /// documentation for the table and ordering). Targets absent from `local`
    /// count as `.offline`; entries of `local` for other targets are ignored.
    public static func next(_ chain: Chain, local: [TargetID: LocalState]) -> Chain {
        let old = chain.targets
        let count = old.count
        if count == 0 { return chain }

        // Pass 1: outcomes that depend on the target alone. `nil` marks a
        // target decided in a later pass.
        var next = [PublicState?](repeating: nil, count: count)
        var goesDown = [Bool](repeating: false, count: count)  // serving + offline
        var candidate = [Bool](repeating: false, count: count)  // syncing/waiting + online
        var anyServing = false
        var anyLastsrv = false
        for i in 0..<count {
            let l = local[old[i].target] ?? .offline
            switch (old[i].state, l) {
            case (.serving, .upToDate), (.serving, .online),
                 (.syncing, .upToDate),
                 (.lastsrv, .upToDate), (.lastsrv, .online):
                next[i] = .serving
                anyServing = true
            case (.serving, .offline):
                goesDown[i] = true
            case (.syncing, .online), (.waiting, .online):
                candidate[i] = true
            case (.waiting, .upToDate), (.offline, .upToDate), (.offline, .online):
                next[i] = .waiting
            case (.lastsrv, .offline):
                next[i] = .lastsrv
                anyLastsrv = true
            case (.syncing, .offline), (.waiting, .offline), (.offline, .offline):
                next[i] = .offline
            }
        }

        // Pass 2: serving targets that went offline. One lastsrv at most, and
        // only when nothing else keeps the latest data.
        var lastsrvChosen = anyServing || anyLastsrv
        for i in 0..<count where goesDown[i] {
            if lastsrvChosen {
                next[i] = .offline
            } else {
                next[i] = .lastsrv
                lastsrvChosen = true
            }
        }

        // Pass 3: syncing/waiting. One syncing at most; an existing syncing
        // target wins over a waiting one, then the first in chain order.
        var syncer: Int?
        if anyServing {
            syncer = (0..<count).first { candidate[$0] && old[$0].state == .syncing }
                ?? (0..<count).first { candidate[$0] }
        }
        for i in 0..<count where candidate[i] {
            next[i] = i == syncer ? .syncing : .waiting
        }

        // Step 2: stable order by state.
        var targets: [ChainTarget] = []
        targets.reserveCapacity(count)
        for group in PublicState.allCases {
            for i in 0..<count where next[i] == group {
                targets.append(ChainTarget(old[i].target, group))
            }
        }
        if targets == old { return chain }
        return Chain(id: chain.id, version: chain.version + 1, targets: targets)
    }
}
