#!/usr/bin/env python3
"""Tests of the failover history checker (check.py).

Each test builds a small results directory by hand, with the records the workload (history.jsonl)
and the harness (events.jsonl, final-state.json) write, lets the checker judge it, and asserts on
the verdict and on the registration it names. The base history is a clean kill-leader run: writes
acknowledged before, during and after the fault, indeterminate and refused writes while the leader
is gone, routed requests and lease probes all along, and a final state in which every node holds
exactly what the acknowledged writes left. Each test breaks one thing in it. Every problem class
the checker knows has a test that must fail it and one that must pass; so do the bounds, the
writes refused while no quorum can form, the report's rows and notes, the workload's
classification of write outcomes, the scenarios' routed-failure rule, and the harness's waits (a
wiped node's new incarnation, a router that must keep routing through a fault).

    python3 -m unittest discover -s scripts/failover -p 'test_*.py'

Only the standard library is used.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import check  # noqa: E402
import workload  # noqa: E402
from check import Bound  # noqa: E402

WORKLOAD_NAMESPACE = "urn:switchboard:failover"
WORKLOAD_CONTRACT = "IWorkload"
NODES = ("1", "2", "3")
SAMPLE_LEASES = 6

T0 = 1_700_000_000.0     # the workload starts
FAULT = T0 + 10.0        # the leader is killed
ELECTED = FAULT + 1.5    # a new leader acknowledges writes again
RESTART = FAULT + 3.0    # the old leader is started again
HEALED = FAULT + 6.0     # every node ready and back in the load balancer
END = HEALED + 6.0       # the workload stops
ANSWERED = 0.015         # how long an answered request takes
TIMEOUT = 12.0           # the workload's request timeout


def registration_id(address, namespace, name):
    """The cluster's id of a registration: SHA-256 over the length-prefixed address, namespace
    (one trailing "/" ignored) and name, truncated to 16 bytes, in hex."""
    if namespace.endswith("/"):
        namespace = namespace[:-1]
    digest = hashlib.sha256()
    for field in (address, namespace, name):
        data = field.encode()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:32]


class Run:
    """One scenario's results as the workload and the harness leave them.

    The final state follows the history the way a correct cluster would: an acknowledged register
    is on every node, an acknowledged unregister removed it everywhere, a refused write changed
    nothing, and an indeterminate one did whatever the test says (`applied`). lose(), put() and
    the other mutators then break that final state on purpose.
    """

    def __init__(self, scenario="kill-leader"):
        self.scenario = scenario
        self.run_id = f"{scenario}-{int(T0)}"
        self.history = []
        self.events = []
        self.seq = 0
        self.index = 0                          # the cluster's applied index
        self.acknowledged = {}                  # address -> id, as the register's answer gave it
        self.entries = {}                       # address -> the registration the cluster stores
        self.nodes = {node: {} for node in NODES}  # node -> {id: registration}
        self.applied_index = {}                 # node -> applied index, where it differs
        self.unreachable = set()                # nodes whose final state could not be read
        self.convergence_ms = 180
        self.terms = {node: 2 for node in NODES}  # one election: the kill's
        for instance, host in (("sample1", "172.29.10.21"), ("sample2", "172.29.10.22")):
            for path, namespace, name in (("soap", "http://tempuri.org/", "ICalculator"),
                                          ("echo", "urn:switchboard:samples", "IEcho"),
                                          ("cache", "urn:switchboard:samples", "ICache")):
                entry = self._registration(f"http://{host}:9000/{path}", namespace, name, T0 - 5,
                                           ttl_ms=5000, metadata={"instance": instance}, owner="sample")
                self._apply(entry)

    # === the cluster ===

    def _registration(self, address, namespace, name, at, ttl_ms=None, metadata=None, owner="ops"):
        self.index += 1
        return {"id": registration_id(address, namespace, name), "address": address, "contract_name": name,
                "contract_namespace": namespace, "ttl_ms": ttl_ms, "weight": 1, "metadata": metadata or {},
                "state": "active", "epoch": self.index, "registered_at_ms": int(at * 1000), "owner": owner}

    def _apply(self, entry, nodes=NODES):
        self.entries[entry["address"]] = entry
        for node in nodes:
            self.nodes[node][entry["id"]] = dict(entry)

    def _remove(self, address, nodes=NODES):
        for node in nodes:
            self.nodes[node] = {i: r for i, r in self.nodes[node].items() if r["address"] != address}

    # === what the workload records (workload.py, Workload._record) ===

    def _record(self, kind, start, end, outcome, status, code=None, error=None, **fields):
        entry = {"kind": kind, "start": round(start, 6), "end": round(end, 6), "outcome": outcome, "status": status}
        if code is not None:
            entry["code"] = code
        if error is not None:
            entry["error"] = error
        entry.update(fields)
        self.history.append(entry)

    @staticmethod
    def _answer(kind, outcome, status):
        """(status, code, error, duration) of a write with this outcome."""
        if outcome == "ok":
            return (201 if kind == "register" else 200), None, None, ANSWERED
        if outcome == "fail":
            if status == 404:
                return 404, "registration_not_found", None, ANSWERED
            return 503, "no_leader", None, ANSWERED   # a router without a leader proposed nothing
        if outcome == "unknown" and kind == "register":
            return None, None, "timeout", TIMEOUT     # sent to the killed leader: no answer
        if outcome == "unknown":
            return 504, "outcome_unknown", None, 5.0  # proposed, but the leader went before committing
        raise ValueError(outcome)

    def register(self, at, outcome="ok", applied=None, answered_at=None, status=None, code=None):
        """Registers a fresh workload address; returns it. `applied`: whether the cluster applied
        it (an acknowledged one is, a refused one is not, an indeterminate one must say).
        answered_at: when the answer came (default: as _answer says); status/code: another answer."""
        if applied is None:
            if outcome == "unknown":
                raise ValueError("say whether the indeterminate register was applied")
            applied = outcome == "ok"
        self.seq += 1
        address = f"http://failover.invalid/{self.run_id}/{self.seq}"
        answer_status, answer_code, error, took = self._answer("register", outcome, None)
        status = answer_status if status is None else status
        code = answer_code if code is None else code
        if answered_at is not None:
            took = answered_at - at
        registration = registration_id(address, WORKLOAD_NAMESPACE, WORKLOAD_CONTRACT) if outcome == "ok" else None
        self._record("register", at, at + took, outcome, status, code, error, address=address, id=registration)
        if outcome == "ok":
            self.acknowledged[address] = registration
        if applied:
            self._apply(self._registration(address, WORKLOAD_NAMESPACE, WORKLOAD_CONTRACT, at))
        return address

    def unregister(self, at, address, outcome="ok", applied=None, status=None, answered_at=None):
        """Unregisters an acknowledged registration by the id its register returned (the workload
        unregisters nothing else)."""
        if applied is None:
            if outcome == "unknown":
                raise ValueError("say whether the indeterminate unregister was applied")
            applied = outcome == "ok"
        answer_status, code, error, took = self._answer("unregister", outcome, status)
        if answered_at is not None:
            took = answered_at - at
        self._record("unregister", at, at + took, outcome, answer_status, code, error,
                     address=address, id=self.acknowledged[address])
        if applied:
            self.index += 1
            self._remove(address)

    def steady(self, elected=None, recovers=True, every=0.1):
        """The workload's steady stream of writes: every `every` seconds a register, unregistered
        again 50 ms later, both acknowledged (so they leave nothing behind). Writes sent between the
        fault and `elected` wait for the new leader and are answered just after it is elected; with
        recovers=False every write sent after healing times out, unapplied."""
        elected = ELECTED if elected is None else elected
        for ms in range(0, round((END - T0) * 1000), round(every * 1000)):
            at = T0 + ms / 1000
            if not recovers and at >= HEALED:
                self.register(at, "unknown", applied=False)
                continue
            answered = max(at + ANSWERED, elected + 0.01) if FAULT <= at < elected else None
            address = self.register(at, answered_at=answered)
            removed = (answered or at + ANSWERED) + 0.035
            self.unregister(removed, address, answered_at=max(removed + ANSWERED, elected + 0.02)
                            if FAULT <= removed < elected else None)

    def background(self, lease_gap=None, lease_failures=None, route_failures=None):
        """Routed requests every 100 ms (those in the first second of the fault fail with the load
        balancer's 502) and lease probes every 200 ms (failed reads while there is no leader). With
        lease_gap=(start, end), the probes in [start, end) count only four of the six leases; with
        lease_failures=(start, end) the probes fail there instead of while there is no leader;
        route_failures=(start, end) likewise for the routed requests."""
        route_failures = route_failures or (FAULT, FAULT + 1.0)
        lease_failures = lease_failures or (FAULT, ELECTED)
        for ms in range(0, round((END - T0) * 1000), 100):
            at, contract = T0 + ms / 1000, ("soap" if ms % 200 else "echo")
            if route_failures[0] <= at < route_failures[1]:
                self._record("route", at, at + 0.004, "fail", 502, code="load_balancer", contract=contract)
            else:
                self._record("route", at, at + 0.002, "ok", 200, contract=contract)
        for ms in range(0, round((END - T0) * 1000), 200):
            at = T0 + ms / 1000
            if lease_failures[0] <= at < lease_failures[1]:
                self._record("leases", at, at + ANSWERED, "fail", 503, code="no_leader",
                             present=None, expected=SAMPLE_LEASES)
            else:
                missing = lease_gap is not None and lease_gap[0] <= at < lease_gap[1]
                self._record("leases", at, at + ANSWERED, "ok", 200,
                             present=SAMPLE_LEASES - 2 if missing else SAMPLE_LEASES, expected=SAMPLE_LEASES)

    # === what the harness records (harness.py, Cluster.event and run) ===

    def event(self, at, event, detail=""):
        self.events.append({"t": round(at, 6), "event": event, "detail": detail})

    # === breaking the final state ===

    def lose(self, address, nodes=NODES):
        """The cluster no longer holds this registration on these nodes."""
        self._remove(address, nodes)

    def put(self, address, nodes=NODES):
        """These nodes hold this registration (again)."""
        entry = self.entries.get(address) or self._registration(address, WORKLOAD_NAMESPACE, WORKLOAD_CONTRACT, END)
        self._apply(entry, nodes)

    def never_registered(self):
        """A workload address nobody tried to register."""
        self.seq += 1
        return f"http://failover.invalid/{self.run_id}/{self.seq}"

    # === the results directory ===

    def write(self, parent):
        results = Path(parent) / self.scenario
        results.mkdir()
        # The workload appends each operation when it completes.
        with open(results / "history.jsonl", "w", encoding="utf-8") as file:
            for entry in sorted(self.history, key=lambda h: h["end"]):
                file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        with open(results / "events.jsonl", "w", encoding="utf-8") as file:
            for entry in sorted(self.events, key=lambda e: e["t"]):
                file.write(json.dumps(entry) + "\n")
        states = {node: {"registrations": sorted(self.nodes[node].values(), key=lambda r: r["id"]),
                         "applied_index": self.applied_index.get(node, self.index)}
                  for node in NODES if node not in self.unreachable}
        final = {"nodes": states, "expected_nodes": list(NODES), "convergence_ms": self.convergence_ms,
                 "terms": dict(self.terms), "leader": 2}
        (results / "final-state.json").write_text(json.dumps(final) + "\n")
        return results


def kill_leader(recovers=True, lease_gap=None, elected=None, **background):
    """A clean kill-leader run; returns it and the addresses the tests refer to. With
    recovers=False no write is acknowledged after healing (they all time out, unapplied); with
    lease_gap=(start, end) the lease probes in that interval find two sample leases missing; with
    elected=t the new leader acknowledges writes from t on (ELECTED by default)."""
    run = Run()
    run.background(lease_gap, **background)
    run.steady(elected, recovers)
    registered = [run.register(T0 + 0.5 + 0.25 * i) for i in range(12)]
    for i, address in enumerate(registered[:4]):
        run.unregister(T0 + 4.0 + 0.25 * i, address)

    run.event(FAULT, "fault", "kill -9 node1 (the leader)")
    named = {
        "acknowledged": registered[4],
        "unregistered": registered[0],
        "unknown_register_applied": run.register(FAULT + 0.1, "unknown", applied=True),
        "unknown_register_not_applied": run.register(FAULT + 0.2, "unknown", applied=False),
        "refused": run.register(FAULT + 0.3, "fail"),
        "unknown_unregister_applied": registered[5],
        "unknown_unregister_not_applied": registered[6],
        "refused_unregister": registered[7],
    }
    run.unregister(FAULT + 0.4, registered[5], "unknown", applied=True)
    run.unregister(FAULT + 0.5, registered[6], "unknown", applied=False)
    run.unregister(FAULT + 0.6, registered[7], "fail")
    elected = ELECTED if elected is None else elected
    during = [run.register(elected + 0.3 * i) for i in range(6)]
    run.unregister(elected + 2.0, during[0])
    run.event(RESTART, "restart", "start node1")
    run.event(HEALED, "healed", "every node ready and back in the load balancer")

    if recovers:
        after = [run.register(HEALED + 0.5 + 0.25 * i) for i in range(8)]
        run.unregister(HEALED + 3.0, after[0])
    else:
        for i in range(8):
            run.register(HEALED + 0.5 + 0.25 * i, "unknown", applied=False)
    return run, named


NO_QUORUM = FAULT + 0.35  # the harness saw that no quorum can form; the window ends at RESTART


def quorum_loss(at=NO_QUORUM):
    """A run in which no leader is elected before RESTART + 1 s: the writes sent from the fault on
    are answered after the window (not judged), but for the refused unregister at FAULT + 0.6 and
    ten refused registers sent in the window; plus the harness's "no-quorum" event at `at`."""
    run, _ = kill_leader(elected=RESTART + 1.0)
    for i in range(10):
        run.register(FAULT + 0.8 + 0.2 * i, "fail")
    run.event(at, "no-quorum", "node3 knows no leader")
    return run


def bounds(**overrides):
    """Bounds the clean synthetic kill-leader run meets: its write unavailability and first
    acknowledgement are about 1.5 s (the new leader answers 1.5 s after the kill), one election,
    10 routed requests failed (the first second of the fault), 8 lease probes failed (no leader for
    1.5 s) and about 100 answered. A test replaces some with the bound it is about."""
    chosen = {
        "write_unavailability_ms": Bound(3000, "one election, twice over"),
        "first_ack_after_fault_ms": Bound(3000, "one election, twice over"),
        "elections": Bound(3, "1 forced, 2 more at most"),
        "routes_failed": Bound(10, "502s for the first second of the fault"),
        "lease_probes_failed": Bound(8, "no leader for 1.5 s, 5 probes/s"),
        "lease_probes_ok": Bound(20, "5 probes/s", at_least=True),
        "routes_failed_after_critical": Bound(0, "no endpoint turns critical"),
    }
    chosen.update(overrides)
    return chosen


class CheckTest(unittest.TestCase):
    def setUp(self):
        environment = mock.patch.dict(os.environ)
        environment.start()
        self.addCleanup(environment.stop)
        os.environ.pop("SWITCHBOARD_FAILOVER_TIGHTEN", None)
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.parent = temporary.name

    def judge(self, run, **overrides):
        return check.check(run.write(self.parent), bounds(**overrides))

    def assertPasses(self, result):
        self.assertTrue(result["passed"], result["problems"])
        self.assertEqual(result["problems"], [])

    def assertProblems(self, result, expected):
        """The run fails with exactly these problems: {prefix: [text each such problem names]}."""
        self.assertFalse(result["passed"])
        for prefix, names in expected.items():
            matching = [p for p in result["problems"] if p.startswith(prefix)]
            self.assertTrue(matching, f"no {prefix!r} problem in {result['problems']}")
            for name in names:
                self.assertTrue(any(name in p for p in matching), f"{name!r} not named in {matching}")
        unexpected = [p for p in result["problems"] if not any(p.startswith(prefix) for prefix in expected)]
        self.assertEqual(unexpected, [])

    # === the clean run ===

    def test_clean_history_passes(self):
        run, _ = kill_leader()
        result = self.judge(run)
        self.assertPasses(result)
        # 12 + 6 + 8 acknowledged registers, less 4 + 1 + 1 acknowledged unregisters, less the two
        # with an indeterminate unregister (either way is right): 18 must exist, the one whose
        # unregister was refused among them.
        self.assertEqual(result["registrations_checked"], 18)
        self.assertEqual(result["registrations_lost"], 0)
        self.assertEqual(result["unregistrations_resurrected"], 0)
        self.assertEqual(result["lease_dropouts"], 0)
        self.assertEqual(result["fault_window_ms"], 6000)
        self.assertEqual(result["routes_failed"], 10)
        self.assertEqual(result["verdict"], "pass")
        self.assertEqual(result["elections"], 1)
        self.assertEqual((result["lease_probes"], result["lease_probes_failed"]), (102, 8))
        # No quorum was lost on purpose: no window, no figure.
        self.assertIsNone(result["writes_without_quorum"])
        self.assertIsNone(result["no_quorum_ms"])
        # The last acknowledgement before the kill came 35 ms before it, the first after it 10 ms
        # after the new leader was elected; the first write sent after the kill was answered then.
        self.assertEqual(result["write_unavailability_ms"], round((ELECTED + 0.01 - (FAULT - 0.035)) * 1000))
        self.assertEqual(result["first_ack_after_fault_ms"], round((ELECTED + 0.01 - FAULT) * 1000))
        self.assertEqual(set(result["bounds"]), set(check.FIGURES))
        self.assertTrue(all(b["verdict"] == "pass" for b in result["bounds"].values()), result["bounds"])
        self.assertEqual(result["scenario"], "kill-leader")
        written = json.loads((Path(self.parent) / "kill-leader" / "result.json").read_text())
        self.assertEqual(written, result)

    # === LOST ===

    def test_lost_acknowledged_registration(self):
        run, named = kill_leader()
        run.lose(named["acknowledged"])
        result = self.judge(run)
        self.assertProblems(result, {"LOST: 1 ": [named["acknowledged"]]})
        self.assertEqual(result["registrations_lost"], 1)

    def test_lost_on_one_node(self):
        run, named = kill_leader()
        run.lose(named["acknowledged"], nodes=("3",))
        run.convergence_ms = None
        result = self.judge(run)
        self.assertProblems(result, {"LOST: 1 ": [f"('{named['acknowledged']}', ['3'])"],
                                     "DISAGREE: nodes hold different registrations": []})

    def test_lost_after_refused_unregister(self):
        # A refused unregister changed nothing: the registration must still be there.
        run, named = kill_leader()
        run.lose(named["refused_unregister"])
        self.assertProblems(self.judge(run), {"LOST: 1 ": [named["refused_unregister"]]})

    # === RESURRECTED ===

    def test_resurrected_unregistration(self):
        run, named = kill_leader()
        run.put(named["unregistered"])
        result = self.judge(run)
        self.assertProblems(result, {"RESURRECTED: 1 ": [named["unregistered"]]})
        self.assertEqual(result["unregistrations_resurrected"], 1)

    def test_resurrected_on_one_node(self):
        run, named = kill_leader()
        run.put(named["unregistered"], nodes=("2",))
        run.convergence_ms = None
        self.assertProblems(self.judge(run), {"RESURRECTED: 1 ": [f"('{named['unregistered']}', ['2'])"],
                                              "DISAGREE: nodes hold different registrations": []})

    # === PHANTOM ===

    def test_phantom_registration(self):
        run, _ = kill_leader()
        phantom = run.never_registered()
        run.put(phantom)
        self.assertProblems(self.judge(run), {"PHANTOM: 1 ": [phantom]})

    def test_sample_leases_are_not_phantoms(self):
        # Registrations outside the workload's namespace (the samples' leases, preloaded ones)
        # were registered by others: never phantoms.
        run, _ = kill_leader()
        self.assertEqual(sum(1 for r in run.nodes["1"].values() if r["ttl_ms"]), SAMPLE_LEASES)
        self.assertPasses(self.judge(run))

    # === UNREGISTER 404 ===

    def test_unregister_answered_not_found(self):
        # The cluster said an acknowledged, live registration was not there: it was lost then.
        run, _ = kill_leader()
        address = run.register(HEALED + 4.0)
        run.unregister(HEALED + 4.5, address, "fail", status=404)
        run.lose(address)
        self.assertProblems(self.judge(run), {"UNREGISTER 404: 1 ": [address], "LOST: 1 ": [address]})

    # === DISAGREE ===

    def test_nodes_hold_different_registrations(self):
        # An indeterminate register that only two nodes applied: not lost, but the nodes disagree.
        run, named = kill_leader()
        run.lose(named["unknown_register_applied"], nodes=("3",))
        run.convergence_ms = None
        self.assertProblems(self.judge(run), {"DISAGREE: nodes hold different registrations": ["'3': 25"]})

    def test_nodes_at_different_applied_indexes(self):
        run, _ = kill_leader()
        run.applied_index["3"] = run.index - 1
        run.convergence_ms = None
        self.assertProblems(self.judge(run), {"DISAGREE: applied indexes differ": [f"'3': {run.index - 1}"]})

    def test_node_without_final_state(self):
        run, _ = kill_leader()
        run.unreachable.add("3")
        run.convergence_ms = None
        self.assertProblems(self.judge(run), {"DISAGREE: no final state from node(s) 3": []})

    # === indeterminate writes ===

    def test_indeterminate_writes_never_count(self):
        # Applied or not, an indeterminate register or unregister is neither lost nor resurrected.
        for name in ("unknown_register_applied", "unknown_register_not_applied",
                     "unknown_unregister_applied", "unknown_unregister_not_applied"):
            for present in (True, False):
                with self.subTest(name, present=present):
                    run, named = kill_leader()
                    if present:
                        run.put(named[name])
                    else:
                        run.lose(named[name])
                    with tempfile.TemporaryDirectory() as parent:
                        result = check.check(run.write(parent), bounds())
                    self.assertPasses(result)
                    self.assertEqual(result["registrations_checked"], 18)

    # === other checks ===

    def test_registration_under_another_id(self):
        run, named = kill_leader()
        address = named["acknowledged"]
        acknowledged = run.acknowledged[address]
        for node in NODES:
            entry = run.nodes[node].pop(acknowledged)
            run.nodes[node]["0" * 32] = dict(entry, id="0" * 32)
        self.assertProblems(self.judge(run), {f"node {node} holds {address} under id {'0' * 32}, acknowledged as "
                                              f"{acknowledged}": [] for node in NODES})

    def test_no_recovery_after_healing(self):
        # Writes are unavailable from healing to the end of the history too.
        run, _ = kill_leader(recovers=False)
        self.assertProblems(self.judge(run, write_unavailability_ms=Bound(20000, "long enough")),
                            {"NO RECOVERY": []})

    def test_dropped_leases(self):
        # Five probes (one second) after the election find two of the six leases missing.
        run, _ = kill_leader(lease_gap=(ELECTED + 1.05, ELECTED + 2.05))
        result = self.judge(run)
        self.assertProblems(result, {"LEASES DROPPED: sample leases went missing 1 time(s), 1000 ms": []})
        self.assertEqual(result["lease_missing_ms"], 1000)
        self.assertEqual(result["lease_dropouts"], 1)

    def judge_apart(self, run, **overrides):
        """judge(), in a directory of its own (for a test that judges several runs)."""
        with tempfile.TemporaryDirectory() as parent:
            return check.check(run.write(parent), bounds(**overrides))

    def test_leases_of_a_killed_service_may_run_out_until_healed_and_no_more(self):
        # The harness killed a sample (its leases run out: the excused count); two leases missing
        # within the window pass, three (more than the killed service holds) fail, and so does a
        # gap after the healing.
        run, _ = kill_leader(lease_gap=(ELECTED + 1.05, ELECTED + 2.05))
        run.event(FAULT, "lease-loss-expected", "2 leases of sample1 run out while it is dead")
        self.assertPasses(self.judge_apart(run))
        run, _ = kill_leader(lease_gap=(ELECTED + 1.05, ELECTED + 2.05))
        run.event(FAULT, "lease-loss-expected", "1 lease of sample1 runs out while it is dead")
        self.assertProblems(self.judge_apart(run), {"LEASES DROPPED": []})
        run, _ = kill_leader(lease_gap=(HEALED + 1.05, HEALED + 2.05))
        run.event(FAULT, "lease-loss-expected", "2 leases of sample1 run out while it is dead")
        self.assertProblems(self.judge_apart(run), {"LEASES DROPPED": []})

    def test_a_routed_request_failing_after_the_endpoint_was_critical_everywhere(self):
        # Routed requests fail in [FAULT, FAULT + 1.0); the harness saw the endpoint critical on
        # every router at FAULT + 0.95: none failed after, but one more failing request did.
        run, _ = kill_leader()
        run.event(FAULT + 0.95, "critical", "sample1 out of every router's rotation")
        result = self.judge_apart(run)
        self.assertPasses(result)
        self.assertEqual(result["routes_failed_after_critical"], 0)
        run, _ = kill_leader(route_failures=(FAULT, FAULT + 1.1))
        run.event(FAULT + 0.95, "critical", "sample1 out of every router's rotation")
        result = self.judge_apart(run, routes_failed=Bound(11, "not this test's figure"))
        self.assertProblems(result, {"ROUTED TO A CRITICAL ENDPOINT: routed requests failed after the endpoint was "
                                     "critical everywhere 1, bound ≤ 0": []})

    # === APPLIED AFTER FAILURE ===

    def test_refused_register_that_was_applied(self):
        # "fail" means the write did not happen: a refused register found on the nodes is a
        # violation of its own, not an indeterminate write.
        run, named = kill_leader()
        run.put(named["refused"])
        result = self.judge(run)
        self.assertProblems(result, {"APPLIED AFTER FAILURE: 1 ": [named["refused"], "503, 'no_leader'"]})
        self.assertEqual(result["failed_registers_applied"], 1)

    def test_refused_register_not_applied_passes(self):
        run, named = kill_leader()
        self.assertFalse(any(r["address"] == named["refused"] for r in run.nodes["1"].values()))
        result = self.judge(run)
        self.assertPasses(result)
        self.assertEqual(result["failed_registers_applied"], 0)

    def test_load_balancer_refusal_that_was_applied(self):
        # HAProxy's own 503 (no router could be connected to) is a definite failure too.
        run, _ = kill_leader()
        address = run.register(HEALED + 1.0, "fail", status=503, code="load_balancer")
        run.put(address)
        self.assertProblems(self.judge(run), {"APPLIED AFTER FAILURE: 1 ": [address, "'load_balancer'"]})

    # === write unavailability and the first acknowledgement after a fault ===

    def test_writes_unavailable_beyond_the_bound(self):
        # The new leader answers 5 s after the kill instead of 1.5 s.
        run, _ = kill_leader(elected=FAULT + 5.0)
        result = self.judge(run)
        self.assertProblems(result, {
            "WRITES UNAVAILABLE: write unavailability 5045 ms, bound ≤ 3000 ms = 3000 ms (one election, twice over)": [],
            "FIRST ACK LATE: first acknowledgement after a fault 5010 ms, bound ≤ 3000 ms": []})
        self.assertEqual(result["bounds"]["write_unavailability_ms"]["verdict"], "fail")

    def test_writes_unavailable_at_the_bound_pass(self):
        run, _ = kill_leader()
        self.assertPasses(self.judge(run, write_unavailability_ms=Bound(1545, "exactly the figure")))
        with tempfile.TemporaryDirectory() as parent:
            one_less = check.check(run.write(parent), bounds(write_unavailability_ms=Bound(1544, "1 ms less")))
        self.assertProblems(one_less, {"WRITES UNAVAILABLE: write unavailability 1545 ms, bound ≤ 1544 ms": []})

    def test_first_ack_late_while_earlier_writes_are_answered(self):
        # Writes sent before the kill are answered every 200 ms through the outage (the gaps stay
        # short), but no write sent after the kill is acknowledged for 4 s.
        run, _ = kill_leader(elected=FAULT + 4.0)
        for i in range(20):
            run.register(FAULT - 0.5 + 0.02 * i, answered_at=FAULT + 0.2 * i)
        result = self.judge(run)
        self.assertProblems(result, {"FIRST ACK LATE: first acknowledgement after a fault 4010 ms, bound ≤ 3000 ms": []})
        self.assertLessEqual(result["write_unavailability_ms"], 250)

    def test_first_ack_counts_every_fault(self):
        # A second fault (after healing) after which writes wait 4 s fails, although writes came
        # back 1.5 s after the first one.
        run, _ = kill_leader(recovers=False)
        run.event(HEALED + 1.0, "fault", "a second fault")
        run.register(HEALED + 1.0, answered_at=HEALED + 5.0)
        result = self.judge(run, write_unavailability_ms=Bound(10000, "not this test's figure"))
        self.assertProblems(result, {"FIRST ACK LATE: first acknowledgement after a fault 4000 ms": []})

    def test_first_ack_counts_from_when_the_fault_took_effect(self):
        # The kill's command returned 0.5 s after the harness began it ("injected"): the first
        # acknowledgement is timed from then; an "injected" event after the restart belongs to no fault.
        run, _ = kill_leader()
        run.event(FAULT + 0.5, "injected", "node1 killed")
        run.event(RESTART + 0.5, "injected", "not this fault's")
        result = self.judge(run)
        self.assertPasses(result)
        self.assertEqual(result["first_ack_after_fault_ms"], round((ELECTED + 0.01 - FAULT - 0.5) * 1000))
        self.assertEqual(check.injections(run.events), [FAULT + 0.5])

    def test_bound_grows_with_the_outage(self):
        # The outage runs from the last fault to the restart (3 s here): a bound of 600 ms per
        # second of it holds 1545 ms, one of 400 ms per second does not.
        run, _ = kill_leader()
        result = self.judge(run, write_unavailability_ms=Bound(0, "grows with the outage", outage=600))
        self.assertPasses(result)
        self.assertEqual(result["outage_ms"], 3000)
        self.assertEqual(result["bounds"]["write_unavailability_ms"]["bound"], "≤ 600/s × outage ms")
        self.assertEqual(result["bounds"]["write_unavailability_ms"]["limit"], 1800)
        with tempfile.TemporaryDirectory() as parent:
            tight = check.check(run.write(parent), bounds(write_unavailability_ms=Bound(0, "too tight", outage=400)))
        self.assertProblems(tight, {"WRITES UNAVAILABLE: write unavailability 1545 ms, bound ≤ 400/s × outage ms "
                                    "= 1200 ms": []})

    def test_outage_ends_at_healed_without_a_restart(self):
        run, _ = kill_leader()
        run.events = [e for e in run.events if e["event"] != "restart"]
        self.assertEqual(self.judge(run)["outage_ms"], 6000)

    def test_history_without_a_fault(self):
        run, _ = kill_leader()
        run.events = [e for e in run.events if e["event"] != "fault"]
        self.assertProblems(self.judge(run), {
            "NO FAULT": [],
            "WRITES UNAVAILABLE: cannot judge the write unavailability: the figure is missing": [],
            "FIRST ACK LATE: cannot judge the first acknowledgement after a fault: the figure is missing": []})

    # === elections ===

    def test_too_many_elections(self):
        run, _ = kill_leader()
        run.terms = {"1": 6, "2": 6, "3": 5}
        result = self.judge(run)
        self.assertProblems(result, {"ELECTIONS: elections (final term - 1) 5, bound ≤ 3 = 3 (1 forced, 2 more at most)": []})
        self.assertEqual(result["elections"], 5)

    def test_elections_at_the_bound_pass(self):
        run, _ = kill_leader()
        run.terms = {"1": 4, "2": 4, "3": 4}
        self.assertPasses(self.judge(run))

    def test_elections_without_final_terms(self):
        run, _ = kill_leader()
        run.terms = {node: None for node in NODES}
        self.assertProblems(self.judge(run), {"ELECTIONS: cannot judge the elections (final term - 1): the figure "
                                              "is missing": []})

    def test_elections_bound_by_the_unavailability(self):
        # 2 campaigners, once per 120 ms each, over 1.545 s of unavailability, plus 4: 29.75.
        formula = Bound(4, "campaigns while no majority forms", unavailable=2 / 0.120)
        run, _ = kill_leader()
        run.terms = {node: 30 for node in NODES}
        self.assertPasses(self.judge(run, elections=formula))
        run.terms = {node: 31 for node in NODES}
        with tempfile.TemporaryDirectory() as parent:
            result = check.check(run.write(parent), bounds(elections=formula))
        self.assertProblems(result, {"ELECTIONS: elections (final term - 1) 30, bound ≤ 16.7/s × unavailability + 4 "
                                     "= 30": []})

    # === routed requests ===

    def test_routed_failures_beyond_the_bound(self):
        run, _ = kill_leader(route_failures=(FAULT, FAULT + 2.0))
        result = self.judge(run)
        self.assertProblems(result, {"ROUTED FAILURES: routed requests failed 20, bound ≤ 10 = 10": []})
        self.assertEqual(result["route_errors"], {"502 load_balancer": 20})

    def test_routed_failures_within_the_bound_pass(self):
        run, _ = kill_leader(route_failures=(FAULT, FAULT + 0.5))
        result = self.judge(run)
        self.assertPasses(result)
        self.assertEqual(result["routes_failed"], 5)

    # === writes while no quorum can form (a "no-quorum" window) ===

    def judge_quorum(self, run):
        return self.judge(run, write_unavailability_ms=Bound(10000, "not this test's figure"),
                          first_ack_after_fault_ms=Bound(10000, "not this test's figure"))

    def test_writes_refused_without_quorum_pass(self):
        run = quorum_loss()
        result = self.judge_quorum(run)
        self.assertPasses(result)
        # Writes sent before the window (the indeterminate ones at FAULT + 0.1 to 0.5) or answered
        # after it (the steady writes, answered once the leader is elected) are not judged.
        self.assertEqual(result["writes_without_quorum"],
                         {"refused": {"503 no_leader": 11}, "acknowledged": 0, "indeterminate": 0})
        self.assertEqual(result["no_quorum_ms"], round((RESTART - NO_QUORUM) * 1000))
        self.assertIn("writes without a quorum 11 refused 0 acknowledged 0 indeterminate", check.summary_line(result))

    def test_load_balancer_refusal_without_quorum_passes(self):
        # Once no router is ready for the control API, HAProxy answers 503 itself: refused too.
        run = quorum_loss()
        run.register(FAULT + 2.9, "fail", status=503, code="load_balancer")
        result = self.judge_quorum(run)
        self.assertPasses(result)
        self.assertEqual(result["writes_without_quorum"]["refused"], {"503 no_leader": 11, "503 load_balancer": 1})

    def test_write_acknowledged_without_quorum(self):
        run = quorum_loss()
        address = run.register(FAULT + 1.05)
        result = self.judge_quorum(run)
        self.assertProblems(result, {"WRITES WITHOUT QUORUM: 1 writes sent while no quorum could form were "
                                     "acknowledged": [address]})
        self.assertEqual(result["writes_without_quorum"]["acknowledged"], 1)

    def test_write_left_indeterminate_without_quorum(self):
        run = quorum_loss()
        run.register(FAULT + 1.05, "unknown", applied=False, answered_at=FAULT + 1.5, status=504,
                     code="outcome_unknown")
        result = self.judge_quorum(run)
        self.assertProblems(result, {"WRITES WITHOUT QUORUM: 1 writes sent while no quorum could form were left "
                                     "indeterminate instead of refused": ["'504 outcome_unknown': 1"]})
        self.assertEqual(result["writes_without_quorum"]["indeterminate"], 1)

    def test_no_write_answered_without_quorum(self):
        # The window opens after the last refused write: the refusal was not seen.
        run = quorum_loss(at=FAULT + 2.9)
        result = self.judge_quorum(run)
        self.assertProblems(result, {"WRITES WITHOUT QUORUM: no write was sent and answered while no quorum "
                                     "could form": []})

    def test_quorum_loss_window_without_an_end(self):
        run = quorum_loss(at=END + 1.0)
        result = self.judge_quorum(run)
        self.assertProblems(result, {"WRITES WITHOUT QUORUM: a no-quorum window has no end": [],
                                     "WRITES WITHOUT QUORUM: no write was sent and answered": []})
        self.assertIsNone(result["no_quorum_ms"])

    def test_quorum_loss_windows(self):
        events = [{"t": 1.0, "event": "fault"}, {"t": 2.0, "event": "no-quorum"}, {"t": 2.5, "event": "injected"},
                  {"t": 9.0, "event": "restart"}, {"t": 12.0, "event": "healed"}, {"t": 13.0, "event": "no-quorum"},
                  {"t": 14.0, "event": "resume"}, {"t": 20.0, "event": "no-quorum"}]
        self.assertEqual(check.quorum_loss_windows(events), [(2.0, 9.0), (13.0, 14.0), (20.0, None)])
        self.assertEqual(check.quorum_loss_windows([{"t": 1.0, "event": "fault"}]), [])
        # "no-quorum" is no boundary of a fault: the kill after it still times the first ack.
        self.assertEqual(check.injections(events), [2.5])

    def test_bounds_no_longer_take_a_known_failure_marker(self):
        # No scenario may be excused: a bound is asserted, or it is not a bound.
        with self.assertRaises(TypeError):
            Bound(1, "why", known_failure="today")
        with self.assertRaisesRegex(ValueError, "needs its reason"):
            Bound(1, " ")
        with self.assertRaisesRegex(ValueError, "missing"):
            check.validate_bounds({k: v for k, v in bounds().items() if k != "elections"})
        with self.assertRaisesRegex(ValueError, "a minimum is expected"):
            check.validate_bounds(bounds(lease_probes_ok=Bound(20, "at most, by mistake")))

    # === lease probes ===

    def test_every_lease_probe_failing_fails(self):
        # No probe answered: LEASES DROPPED cannot see anything, so the probes themselves fail it.
        run, _ = kill_leader(lease_failures=(T0, END))
        result = self.judge(run)
        self.assertProblems(result, {"LEASE PROBES FAILED: lease probes failed 110, bound ≤ 8": [],
                                     "LEASE PROBES TOO FEW: lease probes answered 0, bound ≥ 20": []})
        self.assertEqual(result["lease_dropouts"], 0)

    def test_lease_probes_failing_within_the_allowance_pass(self):
        run, _ = kill_leader(lease_failures=(FAULT, FAULT + 1.6))
        result = self.judge(run)
        self.assertPasses(result)
        self.assertEqual(result["lease_probes_failed"], 8)

    def test_lease_probes_beyond_the_allowance(self):
        run, _ = kill_leader(lease_failures=(FAULT, FAULT + 1.8))
        self.assertProblems(self.judge(run), {"LEASE PROBES FAILED: lease probes failed 9, bound ≤ 8": []})

    def test_too_few_lease_probes_answered(self):
        run, _ = kill_leader()
        self.assertProblems(self.judge(run, lease_probes_ok=Bound(103, "one more than answered", at_least=True)),
                            {"LEASE PROBES TOO FEW: lease probes answered 102, bound ≥ 103": []})
        with tempfile.TemporaryDirectory() as parent:
            self.assertPasses(check.check(run.write(parent), bounds(lease_probes_ok=Bound(102, "all", at_least=True))))

    # === tightening a bound (to see an assertion fail against a real run) ===

    def test_tightened_bound_fails_a_clean_run(self):
        run, _ = kill_leader()
        os.environ["SWITCHBOARD_FAILOVER_TIGHTEN"] = "write_unavailability_ms=1000, elections=0"
        result = self.judge(run)
        self.assertProblems(result, {"WRITES UNAVAILABLE: write unavailability 1545 ms, bound ≤ 1000 ms": [
            "tightened to 1000"], "ELECTIONS: elections (final term - 1) 1, bound ≤ 0": []})

    def test_tightening_never_loosens(self):
        run, _ = kill_leader(route_failures=(FAULT, FAULT + 2.0))
        os.environ["SWITCHBOARD_FAILOVER_TIGHTEN"] = "routes_failed=1000,lease_probes_ok=1"
        result = self.judge(run)
        self.assertProblems(result, {"ROUTED FAILURES: routed requests failed 20, bound ≤ 10": []})
        self.assertEqual(result["bounds"]["lease_probes_ok"]["limit"], 20)

    def test_tightening_an_unknown_figure(self):
        with self.assertRaisesRegex(ValueError, "cannot tighten 'speed=1'"):
            check.tightenings("speed=1")

    # === the command line (the scenario's own bounds, from harness.py) ===

    def run_command(self, *args):
        environment = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_FAILOVER_TIGHTEN"}
        return subprocess.run([sys.executable, str(HERE / "check.py"), *args], capture_output=True, text=True,
                              env=environment, timeout=60)

    @staticmethod
    def realistic():
        """A clean kill-leader run as the product gives it today: 3 routed requests and 2 lease
        probes in flight on the killed router fail."""
        return kill_leader(route_failures=(FAULT, FAULT + 0.3), lease_failures=(FAULT, FAULT + 0.3))

    def test_command_passes_a_clean_run(self):
        results = self.realistic()[0].write(self.parent)
        done = self.run_command(str(results))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertRegex(done.stdout, r"^PASS kill-leader: \d+ operations .* registrations lost 0 of 18\n$")

    def test_command_fails_a_lost_registration(self):
        run, named = self.realistic()
        run.lose(named["acknowledged"])
        done = self.run_command(str(run.write(self.parent)))
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        lines = done.stdout.splitlines()
        self.assertRegex(lines[0], r"^FAIL kill-leader: .* registrations lost 1 of 18$")
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[1].startswith("  LOST: 1 "), lines)
        self.assertIn(named["acknowledged"], lines[1])

    def test_command_tightens(self):
        results = self.realistic()[0].write(self.parent)
        done = self.run_command("--tighten", "write_unavailability_ms=100", str(results))
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("  WRITES UNAVAILABLE: write unavailability 1545 ms, bound ≤ 100 ms", done.stdout)

    def test_command_usage(self):
        for args in ((), ("--tighten",), ("--tighten", "speed=1", "somewhere")):
            with self.subTest(args=args):
                done = self.run_command(*args)
                self.assertEqual(done.returncode, 2)
                self.assertTrue("usage:" in done.stderr or "cannot tighten" in done.stderr, done.stderr)


class WorkloadOutcomeTest(unittest.TestCase):
    """The workload calls a write "fail" only when it certainly did not happen."""

    def outcome(self, status=None, code=None, error=None, sent=True, body=None):
        if body is None:
            body = json.dumps({"code": code, "message": "m"}).encode() if code else b"<html>haproxy</html>"
        return workload.write_outcome(workload.Answer(status=status, body=body, error=error, sent=sent))

    def test_acknowledged(self):
        for status in (200, 201, 204):
            self.assertEqual(self.outcome(status, body=b'{"id": "x"}'), "ok")

    def test_definite_failures(self):
        cases = [
            (400, "invalid_registration"), (401, "unauthorized"), (403, "forbidden"), (404, "registration_not_found"),
            (409, "path_conflict"), (413, "body_too_large"), (429, "quota_exceeded"),
            # A router answers no_leader only when no attempt reached a leader (a leader's
            # not-leader answer means the entry was not appended, or was truncated).
            (503, "no_leader"),
            # HAProxy's own 503: no router could be connected to.
            (503, None),
        ]
        for status, code in cases:
            with self.subTest(status=status, code=code):
                self.assertEqual(self.outcome(status, code), "fail")
        self.assertEqual(self.outcome(error="connect: refused", sent=False), "fail")

    def test_indeterminate(self):
        cases = [
            (504, "outcome_unknown"), (503, "shutting_down"), (503, "node_unreachable"), (500, "internal_error"),
            (507, "registry_full"), (502, None), (504, None),
        ]
        for status, code in cases:
            with self.subTest(status=status, code=code):
                self.assertEqual(self.outcome(status, code), "unknown")
        self.assertEqual(self.outcome(error="timeout"), "unknown")
        self.assertEqual(self.outcome(error="RemoteDisconnected: closed"), "unknown")


class ScenarioTableTest(unittest.TestCase):
    """The scenarios' bounds in harness.py."""

    @classmethod
    def setUpClass(cls):
        import harness
        cls.harness = harness

    def test_every_scenario_bounds_every_figure_with_a_reason(self):
        for name, scenario in self.harness.SCENARIOS.items():
            with self.subTest(name):
                check.validate_bounds(scenario.bounds)
                self.assertTrue((HERE / f"{name}.sh").exists())
                for bound in scenario.bounds.values():
                    self.assertGreater(len(bound.why), 20, bound.why)

    def test_routed_failures_follow_the_rule(self):
        # 0 where no data-plane router is killed, frozen or cut off; else the requests in flight on
        # those that are (10 per killed or cut-off router, 40 per frozen one), never more; kill-all,
        # where no router runs at all, is the one exception.
        expected = {
            "kill-leader": 10, "kill-follower": 10, "pause-leader": 40, "partition-leader-peers": 0,
            "disconnect-node": 10, "rolling-restart": 0, "kill-two-routers": 20, "wipe-node": 10,
            "wipe-and-kill-leader": 20, "kill-leader-during-snapshot-install": 20, "disk-full-follower": 10,
            "pause-leader-during-membership-change": 50, "kill-leader-large-state": 20,
        }
        for name, scenario in self.harness.SCENARIOS.items():
            bound = scenario.bounds["routes_failed"]
            with self.subTest(name):
                if scenario.no_router_runs:
                    self.assertEqual(name, "kill-all")
                    continue
                if name == "kill-sample":
                    # No router is touched; a service is killed: what fails is what is routed to it
                    # until every router lists it critical.
                    self.assertEqual(scenario.data_plane_faults, {})
                    self.assertEqual(bound.limit, round(50 * (self.harness.CHECK_DETECTION_S + 2)))
                    self.assertIn("critical", bound.why)
                    self.assertEqual(scenario.bounds["routes_failed_after_critical"].limit, 0)
                    continue
                self.assertEqual((bound.limit, bound.outage, bound.unavailable), (expected[name], 0.0, 0.0))
                faults = scenario.data_plane_faults
                self.assertEqual(bound.limit, 10 * faults.get("killed", 0) + 40 * faults.get("frozen", 0)
                                 + 10 * faults.get("cut_off", 0))
                self.assertIn("nothing may fail" if not faults else "in flight", bound.why)
        self.assertEqual(set(expected) | {"kill-all", "kill-sample"}, set(self.harness.SCENARIOS))

    def test_timing_bounds_catch_writes_stuck_for_ten_seconds(self):
        # No scenario accepts writes stuck for 10 s beyond the fault's own outage (2 s here).
        facts = {"outage_s": 2.0, "unavailable_s": 10.0}
        for name, scenario in self.harness.SCENARIOS.items():
            for figure in ("write_unavailability_ms", "first_ack_after_fault_ms"):
                with self.subTest(name, figure=figure):
                    self.assertLess(scenario.bounds[figure].value(facts), 12000)

    def test_run_all_runs_every_scenario(self):
        text = (HERE / "run-all.sh").read_text()
        listed = text.split("scenarios=(", 2)[2].split(")", 1)[0].split()
        self.assertEqual(listed, list(self.harness.SCENARIOS))


class ReportTest(unittest.TestCase):
    """The suite's table: a row per scenario, a figure beyond its bound in bold, the notes on quorum loss."""

    @classmethod
    def setUpClass(cls):
        import report
        cls.report = report

    def setUp(self):
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.root = Path(temporary.name)

    def result(self, scenario, run=None, **overrides):
        run = run or CheckTest.realistic()[0]
        run.scenario = scenario
        return check.check(run.write(self.root), bounds(**overrides))

    def test_quorum_note(self):
        run = quorum_loss()
        run.register(FAULT + 2.9, "fail", status=503, code="load_balancer")
        run.scenario = "kill-two-routers"
        check.check(run.write(self.root), bounds(write_unavailability_ms=Bound(10000, "not this test's"),
                                                 first_ack_after_fault_ms=Bound(10000, "not this test's")))
        self.result("kill-leader")
        notes = self.report.quorum_notes(["kill-leader", "kill-two-routers", "kill-all"], self.root)
        self.assertEqual(notes, ["kill-two-routers: writes sent and answered while no quorum could form in 2.6 s: "
                                 "12 refused definitely (11 × 503 no_leader, 1 × 503 load_balancer)."])

    def test_quorum_note_shows_what_was_not_refused(self):
        run = quorum_loss()
        run.register(FAULT + 1.05)
        run.scenario = "kill-two-routers"
        check.check(run.write(self.root), bounds(write_unavailability_ms=Bound(10000, "not this test's"),
                                                 first_ack_after_fault_ms=Bound(10000, "not this test's")))
        (note,) = self.report.quorum_notes(["kill-two-routers"], self.root)
        self.assertTrue(note.endswith("11 refused definitely (11 × 503 no_leader), **1 acknowledged**."), note)

    def test_failed_and_missing_rows(self):
        self.result("kill-leader", elections=Bound(0, "none"))
        table, passed, verdicts = self.report.results_table(["kill-leader", "kill-all"], self.root)
        self.assertFalse(passed)
        self.assertEqual(verdicts, {"kill-leader": "fail", "kill-all": "not run"})
        self.assertIn("| **FAIL** |", table)
        self.assertIn("**1** (≤ 0)", table)
        self.assertIn("| **not run** |", table)

    def test_passing_row(self):
        self.result("kill-leader")
        table, passed, verdicts = self.report.results_table(["kill-leader"], self.root)
        self.assertTrue(passed)
        self.assertIn("| pass |", table)
        self.assertIn("| 1545 (≤ 3000) |", table)

    def test_bounds_table_names_every_scenario_and_reason(self):
        text = self.report.bounds_table(list(self.report.SCENARIOS))
        for name, scenario in self.report.SCENARIOS.items():
            self.assertIn(f"| {name} |", text)
            for bound in scenario.bounds.values():
                self.assertIn(bound.why, text)
        self.assertNotIn("known failure", text)
        self.assertIn("| kill-all | ≤ outage + 6000 | ≤ outage + 6000 | ≤ 25/s × unavailability + 3 |", text)


class HarnessWaitTest(unittest.TestCase):
    """harness.py waits for a wiped node's new incarnation, not just for three voters."""

    def setUp(self):
        import harness
        self.harness = harness
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.cluster = harness.Cluster(Path(temporary.name))
        self.addCleanup(self.cluster.log.close)
        self.addCleanup(self.cluster.events.close)
        self.cluster.say = lambda message: None
        self.cluster.agreed_leader = lambda among=harness.NODES: 1
        self.before = {1: ("voter", "a1"), 2: ("voter", "b1"), 3: ("voter", "c1")}

    def views(self, *views):
        """The leader's membership as it answers poll after poll (the last one from then on)."""
        answers = list(views)
        self.cluster.members = lambda of: answers.pop(0) if len(answers) > 1 else answers[0]

    def test_old_membership_does_not_pass(self):
        # Three voters, but node 3 still under its old incarnation: the wait must not end.
        self.views(dict(self.before))
        with self.assertRaisesRegex(self.harness.ScenarioError, "node3 a voter again under a new incarnation.*"
                                                                "last seen: leader 1"):
            self.cluster.wait_rejoined(3, self.before, deadline=0.5)

    def test_new_incarnation_as_learner_does_not_pass(self):
        self.views({1: ("voter", "a1"), 2: ("voter", "b1"), 3: ("learner", "c2")})
        with self.assertRaises(self.harness.ScenarioError):
            self.cluster.wait_rejoined(3, self.before, deadline=0.5)

    def test_another_node_changed_does_not_pass(self):
        self.views({1: ("voter", "a1"), 2: ("voter", "b2"), 3: ("voter", "c2")})
        with self.assertRaises(self.harness.ScenarioError):
            self.cluster.wait_rejoined(3, self.before, deadline=0.5)

    def test_new_incarnation_as_voter_passes(self):
        self.views(dict(self.before), {1: ("voter", "a1"), 2: ("voter", "b1"), 3: ("learner", "c2")},
                   {1: ("voter", "a1"), 2: ("voter", "b1"), 3: ("voter", "c2")})
        self.cluster.wait_rejoined(3, self.before, deadline=5)

    def test_fault_that_missed_the_change_fails_the_scenario(self):
        # Once the leader is frozen or dead, the other voter must still list the wiped node's new
        # incarnation as a learner; a voter means the fault came after the change.
        for member, passes in (({"id": 3, "role": "learner", "incarnation": "c2"}, True),
                               ({"id": 3, "role": "voter", "incarnation": "c2"}, False),
                               ({"id": 3, "role": "learner", "incarnation": "c1"}, False),
                               (None, False)):
            with self.subTest(member=member):
                view = {"members": [{"id": 1, "role": "voter", "incarnation": "a1"}] + ([member] if member else [])}
                self.cluster.view = lambda of: view
                if passes:
                    self.cluster.still_learner(3, "c1", 2, "during the change")
                else:
                    with self.assertRaisesRegex(self.harness.ScenarioError, "the fault missed the membership change"):
                        self.cluster.still_learner(3, "c1", 2, "during the change")

    def test_a_router_that_keeps_routing_passes_the_hold(self):
        self.cluster.ready = lambda node, plane="control": plane == "data"
        self.cluster.lb_servers = lambda backend="routers_api": {"node1": "UP", "node2": "UP 1/2", "node3": "DOWN"}
        self.cluster.hold_routing(0.3, [1, 2], "the others are gone", every=0.05)
        events = [json.loads(line) for line in (Path(self.cluster.results) / "events.jsonl").read_text().splitlines()]
        self.assertEqual(events[-1]["event"], "verified")
        self.assertIn("node(s) 1, 2 data-ready and UP in the data backend", events[-1]["detail"])

    def test_a_router_that_stops_routing_fails_the_hold(self):
        answers = {"ready": True, "status": "UP"}
        polls = []

        def ready(node, plane="control"):
            polls.append(plane)
            return answers["ready"] if plane == "data" else False

        self.cluster.ready = ready
        self.cluster.lb_servers = lambda backend="routers_api": {"node3": answers["status"]} \
            if backend == "routers_data" else {}
        answers["ready"] = False
        with self.assertRaisesRegex(self.harness.ScenarioError, "node3 reported its data plane not ready"):
            self.cluster.hold_routing(0.3, [3], "the survivor", every=0.05)
        self.assertEqual(polls, ["data"])
        answers.update(ready=True, status="DOWN 1/2")
        with self.assertRaisesRegex(self.harness.ScenarioError, r"took node3 out of the data backend \(DOWN 1/2\)"):
            self.cluster.hold_routing(0.3, [3], "the survivor", every=0.05)

    def test_membership_before_the_wipe_must_be_whole(self):
        self.views({1: ("voter", "a1"), 2: ("voter", "b1"), 3: ("voter", None)})
        with self.assertRaisesRegex(self.harness.ScenarioError, "three voters with incarnations"):
            self.cluster.voters_before_wipe(1)


if __name__ == "__main__":
    unittest.main()
