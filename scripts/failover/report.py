#!/usr/bin/env python3
"""The failover suite's tables: the bounds each scenario must meet (from harness.py) and the last
run's figures against them (from target/failover/SCENARIO/result.json).

    python3 report.py [--update-docs] [--duration SECONDS] SCENARIO...

Prints the results table (Markdown, one row per scenario) and writes it to
target/failover/summary.md. With --update-docs it also replaces, in docs/failover.md, the table
between the failover-table markers with this run's figures and the one between the failover-bounds
markers with the bounds and their reasons.

A bounded cell reads "figure (≤ bound)"; a figure beyond its bound is in bold. Below the table, for
each scenario that lost its quorum on purpose, how many writes were refused meanwhile and how.

Exit status: 0 when every scenario named ran and passed, 1 otherwise.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import FIGURES  # noqa: E402
from harness import REPO, SCENARIOS  # noqa: E402

START = "<!-- failover-table:start -->"
END = "<!-- failover-table:end -->"
BOUNDS_START = "<!-- failover-bounds:start -->"
BOUNDS_END = "<!-- failover-bounds:end -->"
RESULTS = REPO / "target" / "failover"

VERDICTS = {"pass": "pass", "fail": "**FAIL**"}
RED, BOLD, RESET = "\033[31m", "\033[1m", "\033[0m"

COLUMNS = ["scenario", "fault", "result", "operations (writes + routed)", "write unavailability (ms)",
           "first ack after a fault (ms)", "routed requests failed", "registrations lost", "indeterminate writes",
           "lease probes answered / failed", "sample leases missing (ms)", "elections (term − 1)",
           "routed failed after critical"]


def cell(value):
    return "-" if value is None else f"{value}"


def bounded(result, figure):
    """"figure (≤ bound)" for a bounded figure; bold when out of bounds."""
    judged = (result.get("bounds") or {}).get(figure)
    if not judged:
        return cell(result.get(figure))
    value, limit = judged.get("value"), judged.get("limit")
    relation = judged["bound"].split(" ", 1)[0]
    bound = f"({relation} {cell(None if limit is None else round(limit))})"
    if judged.get("verdict") == "fail":
        return f"**{cell(value)}** {bound}"
    return f"{cell(value)} {bound}"


def row(name, root=RESULTS):
    """(Markdown row, passed, verdict) of one scenario's last result (root/name/result.json)."""
    about = SCENARIOS[name].about
    blanks = " | ".join("-" for _ in COLUMNS[3:])
    path = Path(root) / name / "result.json"
    if not path.exists():
        return f"| {name} | {about} | **not run** | {blanks} |", False, "not run"
    r = json.loads(path.read_text())
    if "operations" not in r:  # the harness stopped before the checker ran
        return f"| {name} | {about} | **ERROR**: {'; '.join(r.get('problems', []))} | {blanks} |", False, "error"
    verdict = r.get("verdict", "pass" if r.get("passed") else "fail")
    outcomes = r.get("write_outcomes", {})
    unknown = sum(v for k, v in outcomes.items() if k.endswith("_unknown"))
    operations = f"{r['operations']} ({r['writes']} + {r['routes']})"
    lost = r["registrations_lost"] + r.get("unregistrations_resurrected", 0) + r.get("failed_registers_applied", 0)
    lost_cell = f"**{lost}**" if lost else "0"
    answered = bounded(r, "lease_probes_ok")
    failed = bounded(r, "lease_probes_failed")
    missing = r.get("lease_missing_ms")
    missing_cell = f"**{missing}**" if missing else cell(missing)
    cells = [name, about, VERDICTS.get(verdict, verdict), operations, bounded(r, "write_unavailability_ms"),
             bounded(r, "first_ack_after_fault_ms"), bounded(r, "routes_failed"), lost_cell, str(unknown),
             f"{answered} / {failed}", missing_cell, bounded(r, "elections"), bounded(r, "routes_failed_after_critical")]
    return "| " + " | ".join(cells) + " |", bool(r.get("passed")), verdict


def quorum_notes(names, root=RESULTS):
    """One line per scenario that recorded writes sent while no quorum could form: how many were
    refused, and with which answers."""
    notes = []
    for name in names:
        path = Path(root) / name / "result.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        without = r.get("writes_without_quorum")
        if without is None:
            continue
        refused = without["refused"]
        answers = ", ".join(f"{count} × {answer}" for answer, count in sorted(refused.items(), key=lambda a: -a[1]))
        seconds = "" if r.get("no_quorum_ms") is None else f" in {r['no_quorum_ms'] / 1000:.1f} s"
        wrong = [f"**{without[k]} {k}**" for k in ("acknowledged", "indeterminate") if without[k]]
        notes.append(f"{name}: writes sent and answered while no quorum could form{seconds}: "
                     f"{sum(refused.values())} refused definitely ({answers or 'none'})"
                     f"{', ' + ', '.join(wrong) if wrong else ''}.")
    return notes


def results_table(names, root=RESULTS):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---|---|" + "---:|" * (len(COLUMNS) - 4)]
    verdicts = {}
    all_passed = True
    for name in names:
        line, passed, verdict = row(name, root)
        lines.append(line)
        verdicts[name] = verdict
        all_passed &= passed
    return "\n".join(lines), all_passed, verdicts


def bounds_table(names):
    """The bounds of every scenario (a table), then the reasons, each once with the scenarios that
    share it (a list per figure)."""
    figures = list(FIGURES)
    lines = ["| scenario | " + " | ".join(f"{FIGURES[f][0]}{' (' + FIGURES[f][1] + ')' if FIGURES[f][1] else ''}"
                                         for f in figures) + " |",
             "|---|" + "---|" * len(figures)]
    for name in names:
        cells = []
        for figure in figures:
            bound = SCENARIOS[name].bounds[figure]
            cells.append(bound.describe(FIGURES[figure][1]).removesuffix(" ms"))  # the header names the unit
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    reasons = []
    for figure in figures:
        what, unit = FIGURES[figure]
        reasons.append(f"- **{what}**")
        groups = {}  # (bound, reason) -> scenarios, in the order of the table
        for name in names:
            bound = SCENARIOS[name].bounds[figure]
            groups.setdefault((bound.describe(unit), bound.why), []).append(name)
        for (described, why), scenarios in groups.items():
            reasons.append(f"  - {described} ({', '.join(scenarios)}): {why}.")
    return "\n".join(lines) + "\n\nWhy each bound (the scenarios that share it in brackets):\n\n" + "\n".join(reasons)


def compose_version():
    for cmd in (["docker", "compose", "version", "--short"], ["docker-compose", "version", "--short"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return f"{' '.join(cmd[:-2])} {done.stdout.strip()}"
    return "unknown"


def replace_between(text, start, end, body):
    if start not in text or end not in text:
        raise ValueError(f"no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--duration", type=float, help="suite duration in seconds, for the record")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        print(f"error: no scenario {', '.join(unknown)}", file=sys.stderr)
        return 2

    table, all_passed, verdicts = results_table(args.scenarios)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    duration = "" if args.duration is None else f", scenarios took {int(args.duration // 60)} min {int(args.duration % 60)} s (image build not counted)"
    note = f"Last run: {when}{duration}; {compose_version()}; {os.cpu_count()} CPU cores."
    footer = quorum_notes(args.scenarios)
    summary = f"{note}\n\n{table}\n" + ("\n" + "\n\n".join(footer) + "\n" if footer else "")
    out = RESULTS / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(summary)
    print(f"\n{summary}")
    # On a terminal, say it in colour too.
    tty = sys.stdout.isatty()
    for name, verdict in verdicts.items():
        if verdict in ("fail", "error", "not run"):
            print(f"{RED + BOLD if tty else ''}{verdict.upper()}{RESET if tty else ''}: {name}")

    if args.update_docs:
        doc = REPO / "docs" / "failover.md"
        try:
            text = replace_between(doc.read_text(), START, END, summary.rstrip("\n"))
            text = replace_between(text, BOUNDS_START, BOUNDS_END, bounds_table(list(SCENARIOS)))
        except ValueError as err:
            print(f"error: {doc}: {err}", file=sys.stderr)
            return 1
        doc.write_text(text)
        print(f"updated {doc.relative_to(REPO)}")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
