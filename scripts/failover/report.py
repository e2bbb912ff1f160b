#!/usr/bin/env python3
"""The failover suite's table, from target/failover/SCENARIO/result.json.

    python3 report.py [--update-docs] [--duration SECONDS] SCENARIO...

Prints a Markdown table, one row per scenario, and writes it to target/failover/summary.md. With
--update-docs it also replaces the table in docs/failover.md (between its failover-table markers)
with this run's figures.
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
from harness import REPO, SCENARIOS  # noqa: E402

START = "<!-- failover-table:start -->"
END = "<!-- failover-table:end -->"


def cell(value, unit=""):
    return "-" if value is None else f"{value}{unit}"


def row(name):
    path = REPO / "target" / "failover" / name / "result.json"
    if not path.exists():
        return f"| {name} | {SCENARIOS[name][1]} | not run | - | - | - | - | - | - | - |", False
    r = json.loads(path.read_text())
    verdict = "pass" if r.get("passed") else "**FAIL**"
    if "operations" not in r:  # the harness stopped before the checker ran
        return f"| {name} | {SCENARIOS[name][1]} | **ERROR**: {'; '.join(r.get('problems', []))} | - | - | - | - | - | - | - |", False
    outcomes = r.get("write_outcomes", {})
    unknown = sum(v for k, v in outcomes.items() if k.endswith("_unknown"))
    terms = [t for t in (r.get("final_terms") or {}).values() if t]
    elections = max(terms) - 1 if terms else None
    operations = f"{r['operations']} ({r['writes']} + {r['routes']})"
    return (f"| {name} | {SCENARIOS[name][1]} | {verdict} | {operations} | {cell(r.get('write_unavailability_ms'))} "
            f"| {r['routes_failed']} | {r['registrations_lost']} | {unknown} | {cell(r.get('lease_missing_ms'))} "
            f"| {cell(elections)} |"), bool(r.get("passed"))


def compose_version():
    for cmd in (["docker", "compose", "version", "--short"], ["docker-compose", "version", "--short"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return f"{' '.join(cmd[:-2])} {done.stdout.strip()}"
    return "unknown"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--duration", type=float, help="suite duration in seconds, for the record")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()

    lines = ["| scenario | fault | result | operations (writes + routed) | write unavailability (ms) "
             "| routed requests failed | registrations lost | indeterminate writes | sample leases missing (ms) "
             "| elections |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    all_passed = True
    for name in args.scenarios:
        line, passed = row(name)
        lines.append(line)
        all_passed &= passed
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    duration = "" if args.duration is None else f", suite duration {int(args.duration // 60)} min {int(args.duration % 60)} s"
    note = f"Last run: {when}{duration}; {compose_version()}; {os.cpu_count()} CPU cores."
    table = "\n".join(lines)
    out = REPO / "target" / "failover" / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{note}\n\n{table}\n")
    print(f"\n{note}\n\n{table}\n")

    if args.update_docs:
        doc = REPO / "docs" / "failover.md"
        text = doc.read_text()
        if START not in text or END not in text:
            print(f"error: {doc} has no {START} ... {END} markers", file=sys.stderr)
            return 1
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        doc.write_text(f"{head}{START}\n{note}\n\n{table}\n{END}{tail}")
        print(f"updated {doc.relative_to(REPO)}")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
