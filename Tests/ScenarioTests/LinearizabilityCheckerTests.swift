import CisternScenario
import Testing

/// Builds histories by hand: (client, kind, value, invoked, completed, ok).
func history(_ ops: [(String, History.Operation.Kind, String?, UInt64, UInt64?, Bool?)]) -> History {
    let h = History()
    for (client, kind, value, start, end, ok) in ops {
        let i = h.invoke(client: client, incarnation: 1, key: "k", kind: kind, value: kind == .write ? value : nil, at: start)
        if let end, let ok {
            h.complete(i, at: end, succeeded: ok, readValue: kind == .read ? .some(value) : .none)
        }
    }
    return h
}

@Suite struct LinearizabilityCheckerTests {
    @Test func sequentialHistoryPasses() {
        let h = history([
            ("a", .read, nil, 0, 1, true),
            ("a", .write, "x", 2, 3, true),
            ("b", .read, "x", 4, 5, true),
            ("a", .write, "y", 6, 7, true),
            ("b", .read, "y", 8, 9, true),
        ])
        #expect(LinearizabilityChecker.check(h).isEmpty)
    }

    @Test func concurrentReadsMayReturnEitherValue() {
        let h = history([
            ("a", .write, "x", 0, 10, true),
            ("b", .read, nil, 1, 2, true),
            ("c", .read, "x", 3, 4, true),
            ("b", .read, "x", 5, 6, true),
        ])
        #expect(LinearizabilityChecker.check(h).isEmpty)
    }

    @Test func staleReadAfterANewerReadIsCaught() {
        let h = history([
            ("a", .write, "x", 0, 1, true),
            ("a", .write, "y", 2, 3, true),
            ("b", .read, "y", 4, 5, true),
            ("c", .read, "x", 6, 7, true),
        ])
        #expect(!LinearizabilityChecker.check(h).isEmpty)
    }

    @Test func lostAcknowledgedWriteIsCaught() {
        // y was acknowledged, then a read returns the older x.
        let h = history([
            ("a", .write, "x", 0, 1, true),
            ("a", .write, "y", 2, 3, true),
            ("b", .read, "x", 10, 11, true),
        ])
        #expect(!LinearizabilityChecker.check(h).isEmpty)
        // Even the empty register: a read after an acknowledged write must not see nothing.
        let empty = history([("a", .write, "x", 0, 1, true), ("b", .read, nil, 2, 3, true)])
        #expect(!LinearizabilityChecker.check(empty).isEmpty)
    }

    @Test func readOfAValueNobodyWroteIsCaught() {
        let h = history([("b", .read, "ghost", 0, 1, true)])
        #expect(LinearizabilityChecker.check(h).contains { $0.contains("no client wrote") })
    }

    @Test func readBeforeItsWriteBeganIsCaught() {
        let h = history([("b", .read, "x", 0, 1, true), ("a", .write, "x", 5, 6, true)])
        #expect(LinearizabilityChecker.check(h).contains { $0.contains("before its write began") })
    }

    @Test func writesWithUnknownOutcomeMayOrMayNotHaveHappened() {
        let happened = history([
            ("a", .write, "x", 0, 1, true),
            ("a", .write, "y", 2, 3, false),
            ("b", .read, "y", 10, 11, true),
        ])
        #expect(LinearizabilityChecker.check(happened).isEmpty)
        let didNot = history([
            ("a", .write, "x", 0, 1, true),
            ("a", .write, "y", 2, nil, nil),
            ("b", .read, "x", 10, 11, true),
        ])
        #expect(LinearizabilityChecker.check(didNot).isEmpty)
    }
}
