#!/usr/bin/env python3
"""Checks one failover scenario's history against the cluster's final state and the scenario's bounds.

Reads, from a scenario's results directory:
  history.jsonl      every operation of the workload (see workload.py)
  events.jsonl       what the harness did and when ({"t", "event", "detail"}); the fault window runs
                     from the first "fault" event to the last "healed" event; an "injected" event
                     says when a fault's command returned (the fault took effect); a "no-quorum"
                     event says that from then on no quorum can form (the harness saw it), until
                     the next "restart", "resume", "heal" or "healed" event
  final-state.json   each node's registrations, applied index and Raft term, read from every node
                     directly after healing ({"nodes": {"1": {"registrations": [...],
                     "applied_index": n}}, "terms": {"1": t}})

Fails (exit status 1) when
  - a registration whose register was acknowledged, and which was not unregistered since (or whose
    unregister definitely failed), is missing on any node: LOST;
  - a registration whose unregister was acknowledged is present on any node: RESURRECTED;
  - a workload registration is present that the workload never tried to register: PHANTOM;
  - a register answered with a definite failure (outcome "fail") is present on any node: APPLIED
    AFTER FAILURE (a timeout, outcome "unknown", stays indeterminate: either way is right);
  - an unregister of an acknowledged, live registration answered 404 (the cluster said it was
    not there, so it was lost at that moment, or a retried removal was reported as "not found");
  - the nodes do not hold the same registrations and applied index: DISAGREE;
  - no write was acknowledged after the fault was healed: NO RECOVERY;
  - a lease probe found fewer sample leases than the samples keep renewed: LEASES DROPPED;
  - a write sent after a "no-quorum" event and answered before the quorum could return was
    acknowledged or left indeterminate instead of failing definitely (503 no_leader from a router,
    or the load balancer's own 503), or no write at all was sent and answered in that window, so
    that the refusal could not be seen: WRITES WITHOUT QUORUM;
  - a figure exceeds the scenario's bound (harness.py, SCENARIOS): write unavailability, first
    acknowledgement after a fault, elections, routed requests failed, lease probes failed, or
    too few lease probes answered. Each bound carries its reason.

Prints one summary line and writes result.json with the figures the suite table shows and, for
each bound, the figure, the bound, its reason and the verdict.

Run alone:  python3 check.py [--tighten FIGURE=VALUE ...] target/failover/kill-leader
(the bounds are the scenario's in harness.py; --tighten, or SWITCHBOARD_FAILOVER_TIGHTEN="FIGURE=VALUE,...",
makes some stricter, never looser: to see an assertion fail against a real run).
"""

import json
import os
import sys
from pathlib import Path

# Run as a script, this module is __main__; harness.py (whose scenarios hold the bounds) imports it as
# `check`: one module, so that its Bound is this Bound.
if __name__ == "__main__":
    sys.modules.setdefault("check", sys.modules[__name__])

WORKLOAD_NAMESPACE = "urn:switchboard:failover"

# The figures a scenario bounds: {name: (what it is, unit)}. Every scenario bounds every one.
FIGURES = {
    "write_unavailability_ms": ("write unavailability", "ms"),
    "first_ack_after_fault_ms": ("first acknowledgement after a fault", "ms"),
    "elections": ("elections (final term - 1)", ""),
    "routes_failed": ("routed requests failed", ""),
    "lease_probes_failed": ("lease probes failed", ""),
    "lease_probes_ok": ("lease probes answered", ""),
    "routes_failed_after_critical": ("routed requests failed after the endpoint was critical everywhere", ""),
}
# The problem each figure raises when it is out of bounds.
PROBLEM = {
    "write_unavailability_ms": "WRITES UNAVAILABLE",
    "first_ack_after_fault_ms": "FIRST ACK LATE",
    "elections": "ELECTIONS",
    "routes_failed": "ROUTED FAILURES",
    "lease_probes_failed": "LEASE PROBES FAILED",
    "lease_probes_ok": "LEASE PROBES TOO FEW",
    "routes_failed_after_critical": "ROUTED TO A CRITICAL ENDPOINT",
}


class Bound:
    """A bound on one figure of a scenario, with its reason.

    The bound is `limit`, plus `outage` for every second of the fault's own outage (from the last
    "fault" event to the harness's next "restart", "resume" or "heal"), plus `unavailable`
    for every second of the measured write unavailability. By default it is a maximum; with
    at_least=True a minimum.
    """

    def __init__(self, limit, why, *, outage=0.0, unavailable=0.0, at_least=False):
        if not why or not why.strip():
            raise ValueError("a bound needs its reason")
        self.limit = limit
        self.why = why
        self.outage = outage
        self.unavailable = unavailable
        self.at_least = at_least

    def value(self, facts):
        """The bound for this run: facts has outage_s and unavailable_s (None when unknown)."""
        total = self.limit
        for coefficient, fact in ((self.outage, "outage_s"), (self.unavailable, "unavailable_s")):
            if coefficient:
                if facts.get(fact) is None:
                    return None
                total += coefficient * facts[fact]
        return total

    def tightened(self, value):
        """This bound made stricter (never looser) to `value`."""
        if self.at_least:
            limit = max(self.limit, value)
        else:
            limit = min(self.limit, value)
        outage, unavailable = (self.outage, self.unavailable) if limit == self.limit else (0.0, 0.0)
        return Bound(limit, f"tightened to {value:g}: {self.why}", outage=outage, unavailable=unavailable,
                     at_least=self.at_least)

    def describe(self, unit=""):
        """The bound as a formula, e.g. "≤ 3000 ms", "≤ outage + 5000 ms", "≤ 100/s × outage + 20"."""
        terms = []
        for coefficient, name in ((self.outage, "outage"), (self.unavailable, "unavailability")):
            if not coefficient:
                continue
            if unit == "ms" and coefficient == 1000:
                terms.append(name)
            else:
                terms.append(f"{round(coefficient, 1):g}/s × {name}")
        if self.limit or not terms:
            terms.append(f"{self.limit:g}")
        return f"{'≥' if self.at_least else '≤'} {' + '.join(terms)}{' ' + unit if unit else ''}"

    def to_json(self, unit=""):
        return {"bound": self.describe(unit), "why": self.why}


def validate_bounds(bounds):
    """Every figure has a bound with a reason, a minimum for the answered probes, a maximum else."""
    missing = [name for name in FIGURES if name not in bounds]
    unknown = [name for name in bounds if name not in FIGURES]
    if missing or unknown:
        raise ValueError(f"bounds: missing {missing}, unknown {unknown}")
    for name, bound in bounds.items():
        if not isinstance(bound, Bound):
            raise ValueError(f"bound of {name} is not a Bound")
        if bound.at_least != (name == "lease_probes_ok"):
            raise ValueError(f"bound of {name}: {'a minimum' if name == 'lease_probes_ok' else 'a maximum'} is expected")


def tightenings(text):
    """{figure: value} from "figure=value,figure=value"."""
    out = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in FIGURES:
            raise ValueError(f"cannot tighten {item!r}: FIGURE=VALUE with FIGURE one of {', '.join(FIGURES)}")
        out[name.strip()] = float(value)
    return out


def scenario_bounds(name):
    """The bounds harness.py gives the scenario `name` (imported here, not at the top: harness imports us)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness  # noqa: E402
    if name not in harness.SCENARIOS:
        raise ValueError(f"no scenario {name!r} in harness.py")
    return harness.SCENARIOS[name].bounds


def read_jsonl(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def fault_window(events):
    faults = [e["t"] for e in events if e["event"] == "fault"]
    heals = [e["t"] for e in events if e["event"] == "healed"]
    if not faults:
        return None, None
    return min(faults), (max(heals) if heals else None)


BOUNDARIES = ("fault", "restart", "resume", "heal", "healed")


def injections(events):
    """When each fault took effect: for every "fault" event (the harness records it before it
    acts), the last "injected" event (recorded when a kill, freeze, cut or fill has returned)
    before the next fault, restart, resume, heal or healed event; the fault event itself when
    there is none. Sorted."""
    ordered = sorted(events, key=lambda e: e["t"])
    out = []
    for i, event in enumerate(ordered):
        if event["event"] != "fault":
            continue
        took_effect = event["t"]
        for later in ordered[i + 1:]:
            if later["event"] in BOUNDARIES:
                break
            if later["event"] == "injected":
                took_effect = later["t"]
        out.append(took_effect)
    return out


def outage(events):
    """The fault's own outage (seconds): from the last "fault" event (the harness starts injecting
    it, so the outage includes the fault's own commands) to the first "restart", "resume" or
    "heal" event after it (or "healed" when none); None without a fault."""
    faults = [e["t"] for e in events if e["event"] == "fault"]
    if not faults:
        return None
    last = max(faults)
    ends = sorted(e["t"] for e in events if e["event"] in ("restart", "resume", "heal") and e["t"] >= last)
    if not ends:
        ends = sorted(e["t"] for e in events if e["event"] == "healed" and e["t"] >= last)
    return (ends[0] - last) if ends else None


def failed_after_critical(failed_routes, events):
    """Routed requests that failed although they started after a "critical" event (the harness saw
    every router list the killed endpoint critical): none of them may have been sent to it."""
    marks = [e["t"] for e in events if e["event"] == "critical"]
    if not marks:
        return 0
    return sum(1 for r in failed_routes if r["start"] > min(marks))


def quorum_loss_windows(events):
    """[(start, end)]: from each "no-quorum" event (the harness saw that no quorum can form) to the
    first "restart", "resume", "heal" or "healed" event after it (end None when there is none)."""
    ordered = sorted(events, key=lambda e: e["t"])
    windows = []
    for i, event in enumerate(ordered):
        if event["event"] != "no-quorum":
            continue
        end = next((later["t"] for later in ordered[i + 1:]
                    if later["event"] in ("restart", "resume", "heal", "healed")), None)
        windows.append((event["t"], end))
    return windows


def writes_without_quorum(writes, windows):
    """The writes sent within a quorum-loss window and answered before it ended, by outcome:
    {"fail": [...], "ok": [...], "unknown": [...]}, or None without a window. No write can be
    acknowledged then, and a router that knows no leader refuses a write definitely (503
    no_leader; the load balancer answers 503 itself once no router is ready for the control API)."""
    if not windows:
        return None
    judged = {"fail": [], "ok": [], "unknown": []}
    for write in writes:
        for start, end in windows:
            if end is not None and write["start"] >= start and write["end"] <= end:
                judged[write["outcome"]].append(write)
                break
    return judged


def answer_key(entry):
    """How an operation was answered, e.g. "503 no_leader", "502 load_balancer", "timeout"."""
    key = str(entry.get("status") or (entry.get("error") or "error").split(":")[0])
    if entry.get("code"):
        key += f" {entry['code']}"
    return key


def unavailability(writes, fault_start, fault_end, run_end):
    """Longest gap between consecutive write acknowledgements that overlaps the fault window (ms)."""
    acks = sorted(w["end"] for w in writes if w["outcome"] == "ok")
    if fault_start is None or not acks:
        return None
    end = fault_end if fault_end is not None else run_end
    longest = 0.0
    for earlier, later in zip(acks, acks[1:]):
        if later >= fault_start and earlier <= end:
            longest = max(longest, later - earlier)
    if not any(a >= fault_start for a in acks):
        # Nothing acknowledged after the fault: unavailable until the history ends.
        before = [a for a in acks if a < fault_start]
        return (run_end - (before[-1] if before else fault_start)) * 1000
    if acks[0] > fault_start:
        longest = max(longest, acks[0] - fault_start)
    return longest * 1000


def first_ack_after_faults(writes, events, run_end):
    """For each fault, the time from the moment it took effect (injections) to the first
    acknowledgement of a write sent after that moment; the largest (ms). A fault after which no
    write sent was acknowledged counts until the history ends."""
    faults = injections(events)
    if not faults:
        return None
    acked = sorted((w["start"], w["end"]) for w in writes if w["outcome"] == "ok")
    largest = 0.0
    for fault in faults:
        ends = [end for start, end in acked if start >= fault]
        largest = max(largest, (min(ends) if ends else run_end) - fault)
    return largest * 1000


def node_sets(final):
    """{node: ({id: registration}, applied_index)} for the nodes that answered."""
    sets = {}
    for node, state in sorted(final.get("nodes", {}).items()):
        if not isinstance(state, dict) or "registrations" not in state:
            continue
        sets[node] = ({r["id"]: r for r in state["registrations"]}, state.get("applied_index"))
    return sets


def excused_lease_losses(events):
    """[(start, end, count)]: from each "lease-loss-expected" event (the harness killed a sample
    service, whose leases then run out; its detail starts with how many) to the next "healed"."""
    ordered = sorted(events, key=lambda e: e["t"])
    windows = []
    for i, event in enumerate(ordered):
        if event["event"] != "lease-loss-expected":
            continue
        end = next((e["t"] for e in ordered[i + 1:] if e["event"] == "healed"), float("inf"))
        windows.append((event["t"], end, int(event["detail"].split()[0])))
    return windows


def lease_figures(probes, run_end, excused=()):
    """(answered, failed, dropouts, missing ms) of the lease probes. The sample services renew
    their leases all along: an answered probe that finds fewer than all of them means the cluster
    expired a lease that was being renewed (except the leases of a service the harness killed, for
    as long as it is dead: `excused`). Missing time runs from the first probe that saw one
    missing to the next answered probe that saw them all again."""
    answered = sorted((p for p in probes if p["outcome"] == "ok"), key=lambda p: p["end"])
    failed = sum(1 for p in probes if p["outcome"] != "ok")
    missing_ms, dropouts, missing_since = 0.0, 0, None

    def expected(probe):
        allowed = sum(count for start, end, count in excused if start <= probe["start"] and probe["end"] <= end)
        return probe["expected"] - allowed

    for probe in answered:
        if probe["present"] < expected(probe):
            if missing_since is None:
                missing_since = probe["end"]
                dropouts += 1
        elif missing_since is not None:
            missing_ms += (probe["end"] - missing_since) * 1000
            missing_since = None
    if missing_since is not None:
        missing_ms += (run_end - missing_since) * 1000
    return len(answered), failed, dropouts, missing_ms


def check(results_dir, bounds=None, tighten=None):
    """Judges one results directory. bounds: {figure: Bound} (default: the scenario's, from
    harness.py, by the directory's name); tighten: {figure: value} (default: from
    SWITCHBOARD_FAILOVER_TIGHTEN) makes some bounds stricter."""
    results = Path(results_dir)
    if bounds is None:
        bounds = scenario_bounds(results.name)
    validate_bounds(bounds)
    if tighten is None:
        tighten = tightenings(os.environ.get("SWITCHBOARD_FAILOVER_TIGHTEN"))
    bounds = {name: (bound.tightened(tighten[name]) if name in tighten else bound) for name, bound in bounds.items()}

    history = read_jsonl(results / "history.jsonl")
    run_end = max((h["end"] for h in history), default=0.0)
    events = read_jsonl(results / "events.jsonl") if (results / "events.jsonl").exists() else []
    final = json.loads((results / "final-state.json").read_text()) if (results / "final-state.json").exists() else {}

    writes = [h for h in history if h["kind"] in ("register", "unregister")]
    routes = [h for h in history if h["kind"] == "route"]
    probes = [h for h in history if h["kind"] == "leases"]
    fault_start, fault_end = fault_window(events)
    problems = []
    if fault_start is None:
        problems.append("NO FAULT: the harness recorded no fault event")

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
            failed_but_applied.append((address, register.get("status"), register.get("code"), sorted(holders)))
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
    if failed_but_applied:
        problems.append(f"APPLIED AFTER FAILURE: {len(failed_but_applied)} registers answered with a definite "
                        f"failure were applied, e.g. (address, status, code, nodes) {failed_but_applied[:3]}")
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

    probes_ok, probes_failed, lease_dropouts, lease_missing_ms = lease_figures(probes, run_end,
                                                                              excused_lease_losses(events))
    if lease_dropouts:
        problems.append(f"LEASES DROPPED: sample leases went missing {lease_dropouts} time(s), "
                        f"{round(lease_missing_ms)} ms in all, although they were renewed")

    windows = quorum_loss_windows(events)
    without_quorum = writes_without_quorum(writes, windows)
    refused_without_quorum = None
    if without_quorum is not None:
        if any(end is None for _, end in windows):
            problems.append("WRITES WITHOUT QUORUM: a no-quorum window has no end (no restart, resume, heal or "
                            "healed event after it)")
        if without_quorum["ok"]:
            problems.append(f"WRITES WITHOUT QUORUM: {len(without_quorum['ok'])} writes sent while no quorum could "
                            f"form were acknowledged, e.g. {[w['address'] for w in without_quorum['ok'][:3]]}")
        if without_quorum["unknown"]:
            answers = {}
            for w in without_quorum["unknown"]:
                answers[answer_key(w)] = answers.get(answer_key(w), 0) + 1
            problems.append(f"WRITES WITHOUT QUORUM: {len(without_quorum['unknown'])} writes sent while no quorum "
                            f"could form were left indeterminate instead of refused ({answers})")
        if not any(without_quorum.values()):
            problems.append("WRITES WITHOUT QUORUM: no write was sent and answered while no quorum could form: "
                            "their refusal was not seen")
        refused = {}
        for w in without_quorum["fail"]:
            refused[answer_key(w)] = refused.get(answer_key(w), 0) + 1
        refused_without_quorum = {"refused": refused, "acknowledged": len(without_quorum["ok"]),
                                  "indeterminate": len(without_quorum["unknown"])}

    window_ms = unavailability(writes, fault_start, fault_end, run_end)
    first_ack_ms = first_ack_after_faults(writes, events, run_end)
    if fault_end is not None and not any(w["outcome"] == "ok" and w["end"] > fault_end for w in writes):
        problems.append("NO RECOVERY: no write was acknowledged after the fault was healed")

    # Raft terms at the end: a bootstrapped cluster starts in term 1, so the highest term minus one
    # counts the campaigns since (won or not: a split vote or a candidate without a majority also
    # raises the term).
    terms = [t for t in (final.get("terms") or {}).values() if isinstance(t, int)]
    elections = max(terms) - 1 if terms else None

    outcome_counts = {}
    for w in writes:
        key = f"{w['kind']}_{w['outcome']}"
        outcome_counts[key] = outcome_counts.get(key, 0) + 1
    failed_routes = [r for r in routes if r["outcome"] != "ok"]
    route_errors = {}
    for r in failed_routes:
        route_errors[answer_key(r)] = route_errors.get(answer_key(r), 0) + 1

    # Every figure against its bound.
    outage_s = outage(events)
    facts = {"outage_s": outage_s, "unavailable_s": None if window_ms is None else window_ms / 1000}
    figures = {
        "write_unavailability_ms": window_ms,
        "first_ack_after_fault_ms": first_ack_ms,
        "elections": elections,
        "routes_failed": len(failed_routes),
        "lease_probes_failed": probes_failed,
        "lease_probes_ok": probes_ok,
        "routes_failed_after_critical": failed_after_critical(failed_routes, events),
    }
    judged = {}
    for name, bound in bounds.items():
        what, unit = FIGURES[name]
        value = figures[name]
        limit = bound.value(facts)
        entry = dict(bound.to_json(unit), value=None if value is None else round(value),
                     limit=None if limit is None else round(limit, 1))
        suffix = f" {unit}" if unit else ""
        if value is None or limit is None:
            entry["verdict"] = "fail"
            missing = "the figure" if value is None else "the bound (no outage or unavailability measured)"
            problems.append(f"{PROBLEM[name]}: cannot judge the {what}: {missing} is missing")
        elif (round(value) >= limit) if bound.at_least else (round(value) <= limit):  # as the table shows it
            entry["verdict"] = "pass"
        else:
            entry["verdict"] = "fail"
            problems.append(f"{PROBLEM[name]}: {what} {round(value)}{suffix}, bound {bound.describe(unit)} "
                            f"= {limit:.0f}{suffix} ({bound.why})")
        judged[name] = entry

    result = {
        "scenario": results.name,
        "passed": not problems,
        "verdict": "fail" if problems else "pass",
        "problems": problems,
        "operations": len(writes) + len(routes),
        "writes": len(writes),
        "write_outcomes": outcome_counts,
        "routes": len(routes),
        "routes_failed": len(failed_routes),
        "route_errors": route_errors,
        "routes_failed_after_critical": figures["routes_failed_after_critical"],
        "no_quorum_ms": (None if not windows or any(end is None for _, end in windows)
                         else round(sum(end - start for start, end in windows) * 1000)),
        "writes_without_quorum": refused_without_quorum,
        "write_unavailability_ms": None if window_ms is None else round(window_ms),
        "first_ack_after_fault_ms": None if first_ack_ms is None else round(first_ack_ms),
        "fault_window_ms": None if fault_start is None or fault_end is None else round((fault_end - fault_start) * 1000),
        "outage_ms": None if outage_s is None else round(outage_s * 1000),
        "lease_probes": probes_ok,
        "lease_probes_failed": probes_failed,
        "lease_dropouts": lease_dropouts,
        "lease_missing_ms": round(lease_missing_ms),
        "registrations_checked": must_exist,
        "registrations_lost": len(lost),
        "unregistrations_resurrected": len(resurrected),
        "failed_registers_applied": len(failed_but_applied),
        "applied_indexes": indexes,
        "convergence_ms": final.get("convergence_ms"),
        "final_terms": final.get("terms"),
        "elections": elections,
        "bounds": judged,
    }
    (results / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def summary_line(result):
    verdict = {"pass": "PASS", "fail": "FAIL"}[result["verdict"]]
    window = result["write_unavailability_ms"]
    without = result.get("writes_without_quorum")
    quorum = ("" if without is None else
              f"writes without a quorum {sum(without['refused'].values())} refused "
              f"{without['acknowledged']} acknowledged {without['indeterminate']} indeterminate, ")
    return (f"{verdict} {result['scenario']}: {result['operations']} operations "
            f"({result['writes']} writes, {result['routes']} routed), "
            f"write unavailability {window if window is not None else '-'} ms, "
            f"routed requests failed {result['routes_failed']}, {quorum}"
            f"elections {result['elections'] if result['elections'] is not None else '-'}, "
            f"lease probes {result['lease_probes']} answered {result['lease_probes_failed']} failed, "
            f"sample leases missing {result['lease_missing_ms']} ms, "
            f"registrations lost {result['registrations_lost']} of {result['registrations_checked']}")


def print_result(result, out=sys.stdout):
    print(summary_line(result), file=out, flush=True)
    for problem in result["problems"]:
        print(f"  {problem}", file=out, flush=True)


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    tighten = []
    while len(args) >= 2 and args[0] == "--tighten":
        tighten.append(args[1])
        del args[:2]
    if len(args) != 1 or args[0].startswith("-"):
        print(f"usage: {sys.argv[0]} [--tighten FIGURE=VALUE ...] RESULTS_DIR\nfigures: {', '.join(FIGURES)}",
              file=sys.stderr)
        return 2
    try:
        tightened = tightenings(os.environ.get("SWITCHBOARD_FAILOVER_TIGHTEN"))
        tightened.update(tightenings(",".join(tighten)))
        bounds = scenario_bounds(Path(args[0]).resolve().name)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = check(args[0], bounds, tightened)
    print_result(result)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
