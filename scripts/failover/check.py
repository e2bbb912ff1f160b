#!/usr/bin/env python3
"""Checks one failover scenario's history against the cluster's final state.

Reads, from a scenario's results directory:
  history.jsonl      every operation of the workload (see workload.py)
  events.jsonl       what the harness did and when ({"t", "event", "detail"}); the fault window runs
                     from the first "fault" event to the last "healed" event
  final-state.json   each node's registrations and applied index, read from every node directly
                     after healing ({"nodes": {"1": {"registrations": [...], "applied_index": n}}})

Fails (exit status 1) when
  - a registration whose register was acknowledged, and which was not unregistered since (or whose
    unregister definitely failed), is missing on any node: LOST;
  - a registration whose unregister was acknowledged is present on any node: RESURRECTED;
  - a workload registration is present that the workload never tried to register: PHANTOM;
  - an unregister of an acknowledged, live registration answered 404 (the cluster said it was
    not there, so it was lost at that moment, or a retried removal was reported as "not found");
  - the nodes do not hold the same registrations and applied index: DISAGREE;
  - no write was acknowledged after the fault was healed: the cluster did not recover.
Indeterminate writes (outcome "unknown") never count either way.

It also fails (unless SWITCHBOARD_FAILOVER_STRICT_LEASES=0) when the sample services' leases went
missing although the samples kept renewing them (from the "leases" probes), and reports for how long.

Prints one summary line and writes result.json with the figures the suite table shows:
operations done, write unavailability window (ms), routed requests failed, registrations lost.

Write unavailability window: the longest interval between two consecutive acknowledged writes
(by acknowledgement time, across all writers) among the intervals that overlap the fault window.
With four writers pacing themselves at about 20 writes/s each, the baseline interval is 10-30 ms.

Run alone:  python3 check.py target/failover/kill-leader
"""

import json
import os
import sys
from pathlib import Path

WORKLOAD_NAMESPACE = "urn:switchboard:failover"


def read_jsonl(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def fault_window(events):
    faults = [e["t"] for e in events if e["event"] == "fault"]
    heals = [e["t"] for e in events if e["event"] == "healed"]
    if not faults:
        return None, None
    return min(faults), (max(heals) if heals else None)


def unavailability(writes, fault_start, fault_end, run_end):
    """Longest gap between consecutive write acknowledgements that overlaps the fault window."""
    acks = sorted(w["end"] for w in writes if w["outcome"] == "ok")
    if fault_start is None or not acks:
        return None, None
    end = fault_end if fault_end is not None else run_end
    longest = 0.0
    for earlier, later in zip(acks, acks[1:]):
        if later >= fault_start and earlier <= end:
            longest = max(longest, later - earlier)
    after = [a for a in acks if a >= fault_start]
    if not after:
        # Nothing acknowledged after the fault: unavailable until the history ends.
        before = [a for a in acks if a < fault_start]
        return (run_end - (before[-1] if before else fault_start)) * 1000, None
    if acks[0] > fault_start:
        longest = max(longest, acks[0] - fault_start)
    return longest * 1000, (after[0] - fault_start) * 1000


def node_sets(final):
    """{node: ({id: registration}, applied_index)} for the nodes that answered."""
    sets = {}
    for node, state in sorted(final.get("nodes", {}).items()):
        if not isinstance(state, dict) or "registrations" not in state:
            continue
        sets[node] = ({r["id"]: r for r in state["registrations"]}, state.get("applied_index"))
    return sets


def check(results_dir):
    results = Path(results_dir)
    history = read_jsonl(results / "history.jsonl")
    run_end = max((h["end"] for h in history), default=0.0)
    events = read_jsonl(results / "events.jsonl") if (results / "events.jsonl").exists() else []
    final = json.loads((results / "final-state.json").read_text()) if (results / "final-state.json").exists() else {}

    writes = [h for h in history if h["kind"] in ("register", "unregister")]
    routes = [h for h in history if h["kind"] == "route"]
    lease_probes = sorted((h for h in history if h["kind"] == "leases" and h["outcome"] == "ok"), key=lambda h: h["end"])
    fault_start, fault_end = fault_window(events)
    problems = []

    # One register per address (each is unique), at most one unregister.
    registers = {w["address"]: w for w in writes if w["kind"] == "register"}
    unregisters = {w["address"]: w for w in writes if w["kind"] == "unregister"}

    nodes = node_sets(final)
    expected_nodes = final.get("expected_nodes", ["1", "2", "3"])
    missing_nodes = [n for n in expected_nodes if n not in nodes]
    if missing_nodes:
        problems.append(f"DISAGREE: no final state from node(s) {', '.join(missing_nodes)}")
    present = {}  # address -> set of nodes holding it (workload registrations only)
    for node, (registrations, _) in nodes.items():
        for registration in registrations.values():
            if registration["contract_namespace"].rstrip("/") == WORKLOAD_NAMESPACE:
                present.setdefault(registration["address"], set()).add(node)

    lost, resurrected, phantom, not_found, failed_but_applied = [], [], [], [], []
    must_exist = 0
    for address, register in registers.items():
        unregister = unregisters.get(address)
        holders = present.get(address, set())
        if register["outcome"] == "ok":
            if unregister is not None and unregister["outcome"] == "fail" and unregister.get("status") == 404:
                not_found.append(address)
            if unregister is None or unregister["outcome"] == "fail":
                must_exist += 1
                if holders != set(nodes):
                    lost.append((address, sorted(set(nodes) - holders)))
            elif unregister["outcome"] == "ok" and holders:
                resurrected.append((address, sorted(holders)))
        elif register["outcome"] == "fail" and holders:
            failed_but_applied.append(address)
    for address in present:
        if address not in registers:
            phantom.append(address)

    # The workload records acknowledged registers with the id the cluster returned: the id seen at
    # the end must be that one (ids are a hash of the triple, so this catches a corrupted entry).
    for node, (registrations, _) in nodes.items():
        for registration in registrations.values():
            register = registers.get(registration["address"])
            if register and register.get("id") and register["id"] != registration["id"]:
                problems.append(f"node {node} holds {registration['address']} under id {registration['id']}, "
                                f"acknowledged as {register['id']}")

    if lost:
        problems.append(f"LOST: {len(lost)} acknowledged registrations missing, e.g. {lost[:3]}")
    if resurrected:
        problems.append(f"RESURRECTED: {len(resurrected)} acknowledged unregistrations came back, e.g. {resurrected[:3]}")
    if phantom:
        problems.append(f"PHANTOM: {len(phantom)} registrations nobody registered, e.g. {phantom[:3]}")
    if not_found:
        problems.append(f"UNREGISTER 404: {len(not_found)} acknowledged registrations were 'not found' "
                        f"when unregistered, e.g. {not_found[:3]}")

    # Agreement: same registrations (every contract, leases included) and same applied index.
    id_sets = {node: frozenset(registrations) for node, (registrations, _) in nodes.items()}
    indexes = {node: index for node, (_, index) in nodes.items()}
    if len(set(id_sets.values())) > 1:
        sizes = {node: len(ids) for node, ids in id_sets.items()}
        problems.append(f"DISAGREE: nodes hold different registrations (counts {sizes})")
    if len(set(indexes.values())) > 1:
        problems.append(f"DISAGREE: applied indexes differ {indexes}")

    # The sample services renew their leases all along: a probe that finds fewer than all of them
    # means the cluster expired a lease that was being renewed. Measured from the first probe that
    # saw one missing to the next probe that saw them all again.
    lease_missing_ms, lease_dropouts, missing_since = 0.0, 0, None
    for probe in lease_probes:
        if probe["present"] < probe["expected"]:
            if missing_since is None:
                missing_since = probe["end"]
                lease_dropouts += 1
        elif missing_since is not None:
            lease_missing_ms += (probe["end"] - missing_since) * 1000
            missing_since = None
    if missing_since is not None:
        lease_missing_ms += (run_end - missing_since) * 1000
    if lease_dropouts and os.environ.get("SWITCHBOARD_FAILOVER_STRICT_LEASES", "1") == "1":
        problems.append(f"LEASES DROPPED: sample leases went missing {lease_dropouts} time(s), "
                        f"{round(lease_missing_ms)} ms in all, although they were renewed")

    window_ms, first_ack_ms = unavailability(writes, fault_start, fault_end, run_end)
    if fault_end is not None and not any(w["outcome"] == "ok" and w["end"] > fault_end for w in writes):
        problems.append("NO RECOVERY: no write was acknowledged after the fault was healed")

    outcome_counts = {}
    for w in writes:
        key = f"{w['kind']}_{w['outcome']}"
        outcome_counts[key] = outcome_counts.get(key, 0) + 1
    failed_routes = [r for r in routes if r["outcome"] != "ok"]
    route_errors = {}
    for r in failed_routes:
        key = str(r.get("status") or r.get("error", "error").split(":")[0])
        if r.get("code"):
            key += f" {r['code']}"
        route_errors[key] = route_errors.get(key, 0) + 1

    result = {
        "scenario": results.name,
        "passed": not problems,
        "problems": problems,
        "operations": len(writes) + len(routes),
        "writes": len(writes),
        "write_outcomes": outcome_counts,
        "routes": len(routes),
        "routes_failed": len(failed_routes),
        "route_errors": route_errors,
        "write_unavailability_ms": None if window_ms is None else round(window_ms),
        "first_ack_after_fault_ms": None if first_ack_ms is None else round(first_ack_ms),
        "fault_window_ms": None if fault_start is None or fault_end is None else round((fault_end - fault_start) * 1000),
        "lease_probes": len(lease_probes),
        "lease_dropouts": lease_dropouts,
        "lease_missing_ms": round(lease_missing_ms),
        "registrations_checked": must_exist,
        "registrations_lost": len(lost),
        "unregistrations_resurrected": len(resurrected),
        "failed_registers_applied": len(failed_but_applied),
        "applied_indexes": indexes,
        "convergence_ms": final.get("convergence_ms"),
        # Raft terms at the end: a bootstrapped cluster starts in term 1, so the highest term minus
        # one counts the elections the scenario caused (extra ones would be spurious).
        "final_terms": final.get("terms"),
    }
    (results / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def summary_line(result):
    verdict = "PASS" if result["passed"] else "FAIL"
    window = result["write_unavailability_ms"]
    return (f"{verdict} {result['scenario']}: {result['operations']} operations "
            f"({result['writes']} writes, {result['routes']} routed), "
            f"write unavailability {window if window is not None else '-'} ms, "
            f"routed requests failed {result['routes_failed']}, "
            f"sample leases missing {result['lease_missing_ms']} ms, "
            f"registrations lost {result['registrations_lost']} of {result['registrations_checked']}")


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} RESULTS_DIR", file=sys.stderr)
        return 2
    result = check(sys.argv[1])
    print(summary_line(result))
    for problem in result["problems"]:
        print(f"  {problem}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
