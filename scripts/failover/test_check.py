#!/usr/bin/env python3
"""Tests of the failover history checker (check.py).

Each test builds a small results directory by hand, with the records the workload (history.jsonl)
and the harness (events.jsonl, final-state.json) write, lets the checker judge it, and asserts on
the verdict and on the registration it names. The base history is a clean kill-leader run: writes
acknowledged before, during and after the fault, indeterminate and refused writes while the leader
is gone, routed requests and lease probes all along, and a final state in which every node holds
exactly what the acknowledged writes left. Each test breaks one thing in it.

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

    def register(self, at, outcome="ok", applied=None):
        """Registers a fresh workload address; returns it. `applied`: whether the cluster applied
        it (an acknowledged one is, a refused one is not, an indeterminate one must say)."""
        if applied is None:
            if outcome == "unknown":
                raise ValueError("say whether the indeterminate register was applied")
            applied = outcome == "ok"
        self.seq += 1
        address = f"http://failover.invalid/{self.run_id}/{self.seq}"
        status, code, error, took = self._answer("register", outcome, None)
        registration = registration_id(address, WORKLOAD_NAMESPACE, WORKLOAD_CONTRACT) if outcome == "ok" else None
        self._record("register", at, at + took, outcome, status, code, error, address=address, id=registration)
        if outcome == "ok":
            self.acknowledged[address] = registration
        if applied:
            self._apply(self._registration(address, WORKLOAD_NAMESPACE, WORKLOAD_CONTRACT, at))
        return address

    def unregister(self, at, address, outcome="ok", applied=None, status=None):
        """Unregisters an acknowledged registration by the id its register returned (the workload
        unregisters nothing else)."""
        if applied is None:
            if outcome == "unknown":
                raise ValueError("say whether the indeterminate unregister was applied")
            applied = outcome == "ok"
        answer_status, code, error, took = self._answer("unregister", outcome, status)
        self._record("unregister", at, at + took, outcome, answer_status, code, error,
                     address=address, id=self.acknowledged[address])
        if applied:
            self.index += 1
            self._remove(address)

    def background(self, lease_gap=None):
        """Routed requests every 100 ms (those in the first second of the fault fail with the load
        balancer's 502) and lease probes every 200 ms (failed reads while there is no leader). With
        lease_gap=(start, end), the probes in [start, end) count only four of the six leases."""
        for ms in range(0, round((END - T0) * 1000), 100):
            at, contract = T0 + ms / 1000, ("soap" if ms % 200 else "echo")
            if FAULT <= at < FAULT + 1.0:
                self._record("route", at, at + 0.004, "fail", 502, code="load_balancer", contract=contract)
            else:
                self._record("route", at, at + 0.002, "ok", 200, contract=contract)
        for ms in range(0, round((END - T0) * 1000), 200):
            at = T0 + ms / 1000
            if FAULT <= at < ELECTED:
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
                 "terms": {node: 2 for node in NODES}, "leader": 2}
        (results / "final-state.json").write_text(json.dumps(final) + "\n")
        return results


def kill_leader(recovers=True, lease_gap=None):
    """A clean kill-leader run; returns it and the addresses the tests refer to. With
    recovers=False no write is acknowledged after healing (they all time out, unapplied); with
    lease_gap=(start, end) the lease probes in that interval find two sample leases missing."""
    run = Run()
    run.background(lease_gap)
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
    during = [run.register(ELECTED + 0.3 * i) for i in range(6)]
    run.unregister(ELECTED + 2.0, during[0])
    run.event(RESTART, "restart", "start node1")
    run.event(HEALED, "healed", "every node ready and back in the load balancer")

    if recovers:
        after = [run.register(HEALED + 0.5 + 0.25 * i) for i in range(8)]
        run.unregister(HEALED + 3.0, after[0])
    else:
        for i in range(8):
            run.register(HEALED + 0.5 + 0.25 * i, "unknown", applied=False)
    return run, named


class CheckTest(unittest.TestCase):
    def setUp(self):
        environment = mock.patch.dict(os.environ)
        environment.start()
        self.addCleanup(environment.stop)
        os.environ.pop("SWITCHBOARD_FAILOVER_STRICT_LEASES", None)
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.parent = temporary.name

    def judge(self, run):
        return check.check(run.write(self.parent))

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
                        result = check.check(run.write(parent))
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
        run, _ = kill_leader(recovers=False)
        self.assertProblems(self.judge(run), {"NO RECOVERY": []})

    def test_dropped_leases(self):
        # Five probes (one second) after the election find two of the six leases missing.
        run, _ = kill_leader(lease_gap=(ELECTED + 1.05, ELECTED + 2.05))
        result = self.judge(run)
        self.assertProblems(result, {"LEASES DROPPED: sample leases went missing 1 time(s), 1000 ms": []})
        self.assertEqual(result["lease_missing_ms"], 1000)
        with mock.patch.dict(os.environ, {"SWITCHBOARD_FAILOVER_STRICT_LEASES": "0"}):
            with tempfile.TemporaryDirectory() as parent:
                relaxed = check.check(run.write(parent))
        self.assertPasses(relaxed)
        self.assertEqual(relaxed["lease_dropouts"], 1)

    # === the command line ===

    def run_command(self, *args):
        environment = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_FAILOVER_STRICT_LEASES"}
        return subprocess.run([sys.executable, str(HERE / "check.py"), *args], capture_output=True, text=True,
                              env=environment, timeout=60)

    def test_command_passes_a_clean_run(self):
        results = kill_leader()[0].write(self.parent)
        done = self.run_command(str(results))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertRegex(done.stdout, r"^PASS kill-leader: \d+ operations .* registrations lost 0 of 18\n$")

    def test_command_fails_a_lost_registration(self):
        run, named = kill_leader()
        run.lose(named["acknowledged"])
        done = self.run_command(str(run.write(self.parent)))
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        lines = done.stdout.splitlines()
        self.assertRegex(lines[0], r"^FAIL kill-leader: .* registrations lost 1 of 18$")
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[1].startswith("  LOST: 1 "), lines)
        self.assertIn(named["acknowledged"], lines[1])

    def test_command_usage(self):
        done = self.run_command()
        self.assertEqual(done.returncode, 2)
        self.assertIn("usage:", done.stderr)


if __name__ == "__main__":
    unittest.main()
