#!/usr/bin/env python3
"""Turns the raw output of each benchmark into its summary JSON (standard library only).

    stats.py b1 CELLS.tsv --connections N --seconds S --reps R --cpus C
    stats.py oha OHA.json|- --rate R          normalise one oha JSON report
    stats.py b2 RUNS.jsonl --rate R --seconds S --reps R --cpus C --tool NAME
    stats.py b3 RUNS.jsonl --seconds S --reps R
    stats.py b4 TRIALS.jsonl
"""

import argparse
import json
import os
import statistics
import sys


def quantile(values, q):
    """Nearest-rank quantile; None for no values."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 1))
    return values[min(int(rank), len(values)) - 1]


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def steal_share(ticks, clk, seconds, cpus):
    """The share of the machine's CPU time stolen by the hypervisor over a run."""
    return ticks / (clk * seconds * cpus) if seconds > 0 and cpus else 0.0


def median_of(rows, key):
    """The median of `key` over the rows that have it; None if none has."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def b1(args):
    """Closed-loop throughput per target, CPU per request of the serving processes, ratios."""
    rows = {}
    with open(args.file) as f:
        for line in f:
            target, rep, requests, rate, bad, errors, ticks, clk, wall, steal = line.split("\t")
            cpu_s = int(ticks) / int(clk)
            rows.setdefault(target, []).append(
                {
                    "rep": int(rep),
                    "requests": int(requests),
                    "per_second": float(rate),
                    "non_2xx": int(bad),
                    "socket_errors": int(errors),
                    "cpu_us_per_request": cpu_s * 1e6 / int(requests),
                    "cpu_utilisation": cpu_s / float(wall),
                    "steal": steal_share(int(steal), int(clk), float(wall), args.cpus),
                }
            )
    targets = {}
    for target, runs in rows.items():
        targets[target] = {
            "per_second": spread([r["per_second"] for r in runs]),
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs),
            "cpu_us_per_request_spread": spread([r["cpu_us_per_request"] for r in runs]),
            "cpu_utilisation": statistics.median(r["cpu_utilisation"] for r in runs),
            "runs": runs,
        }
    rps = {t: v["per_second"]["median"] for t, v in targets.items()}
    cpu = {t: v["cpu_us_per_request"] for t, v in targets.items()}
    proxies = [t for t in ("nginx", "haproxy", "switchboard") if t in rps]
    soap = {
        "ratio_vs_nginx": {
            shape: ratio(rps.get(f"switchboard-{shape}"), rps.get("nginx-soap")) for shape in ("soapaction", "body")
        }
        | {"wsa": ratio(rps.get("switchboard-wsa"), rps.get("nginx-wsa"))},
        "cpu_ratio_vs_nginx": {
            shape: ratio(cpu.get(f"switchboard-{shape}"), cpu.get("nginx-soap")) for shape in ("soapaction", "body")
        }
        | {"wsa": ratio(cpu.get("switchboard-wsa"), cpu.get("nginx-wsa"))},
    }
    out = {
        "tool": f"wrk -t1 -c{args.connections} -d{args.seconds}s, median of {args.reps}",
        "reps": args.reps,
        "steal_max": max(r["steal"] for runs in rows.values() for r in runs),
        "targets": targets,
        "ratio_vs_nginx": ratio(rps.get("switchboard"), rps.get("nginx")),
        "ratio_vs_haproxy": ratio(rps.get("switchboard"), rps.get("haproxy")),
        "ratio_vs_direct": ratio(rps.get("switchboard"), rps.get("direct")),
        "cpu_ratio_vs_nginx": ratio(cpu.get("switchboard"), cpu.get("nginx")),
        "slowest_proxy": min(proxies, key=rps.get),
        "b2_rate": 0.5 * min(rps[t] for t in proxies),
        "soap": soap,
    }
    json.dump(out, sys.stdout, indent=1)


def oha(args):
    """One oha JSON report in the shape benchkit's open-loop probe prints."""
    j = json.load(sys.stdin if args.file == "-" else open(args.file))
    pct = j["latencyPercentiles"]
    codes = {int(k): v for k, v in j.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    # Requests cut off by the end of the run are not failures of the target.
    errors = sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
    errors += sum(v for k, v in codes.items() if not 200 <= k < 300)
    ms = lambda s: None if s is None else s * 1e3  # noqa: E731
    out = {
        "rate": args.rate,
        "ok": ok,
        "errors": errors,
        "seconds": j["summary"]["total"],
        "achieved_per_second": j["summary"]["requestsPerSec"],
        "p50_ms": ms(pct.get("p50")),
        "p99_ms": ms(pct.get("p99")),
        "p999_ms": ms(pct.get("p99.9")),
        "max_ms": ms(j["summary"]["slowest"]),
    }
    print(json.dumps(out))


def b2(args):
    """Latency each proxy adds over the direct call of the same repetition, at one fixed open-loop
    rate: per target and percentile, the median over repetitions (and min, max)."""
    reps = {}
    for r in read_jsonl(args.file):
        reps.setdefault(r.get("rep", 1), {})[r["target"]] = r
    per_target = {}
    added_runs = {}
    for rep in sorted(reps):
        runs = reps[rep]
        direct = runs.get("direct", {})
        for target, r in runs.items():
            per_target.setdefault(target, []).append(r)
            if target == "direct":
                continue
            for q in ("p50", "p99", "p999"):
                if r.get(f"{q}_ms") is not None and direct.get(f"{q}_ms") is not None:
                    added_runs.setdefault(target, {}).setdefault(q, []).append((r[f"{q}_ms"] - direct[f"{q}_ms"]) * 1e3)
    clk = os.sysconf("SC_CLK_TCK")
    runs = {}
    for target, rs in per_target.items():
        runs[target] = {
            "p50_ms": median_of(rs, "p50_ms"),
            "p99_ms": median_of(rs, "p99_ms"),
            "p999_ms": median_of(rs, "p999_ms"),
            "achieved_per_second": median_of(rs, "achieved_per_second"),
            "errors": sum(x.get("errors", 0) for x in rs),
            "steal_max": max(steal_share(x.get("steal_ticks", 0), clk, x.get("seconds") or args.seconds, args.cpus) for x in rs),
            # The target's CPU time over the run: the share of one core it kept busy, and per request.
            "core_busy": median_of([{"v": x["cpu_ticks"] / (clk * x["seconds"])} for x in rs
                                    if x.get("cpu_ticks") is not None and x.get("seconds")], "v"),
            "cpu_us_per_request": median_of([{"v": x["cpu_ticks"] / clk / x["ok"] * 1e6} for x in rs
                                             if x.get("cpu_ticks") is not None and x.get("ok")], "v"),
            "reps": rs,
        }
    added = {t: {q: statistics.median(v) for q, v in qs.items()} for t, qs in added_runs.items()}
    added_spread = {t: {q: [min(v), max(v)] for q, v in qs.items()} for t, qs in added_runs.items()}
    sb, ng = added.get("switchboard", {}), added.get("nginx", {})
    out = {
        "tool": args.tool,
        "rate": args.rate,
        "seconds": args.seconds,
        "reps": len(reps),
        "steal_max": max((r["steal_max"] for r in runs.values()), default=0.0),
        "runs": runs,
        "added_us": added,
        "added_us_spread": added_spread,
        "p99_added_ratio_vs_nginx": ratio(sb.get("p99"), ng.get("p99")) if (ng.get("p99") or 0) > 0 else None,
    }
    json.dump(out, sys.stdout, indent=1)


def b3(args):
    """Registrations/s per (clients, target) cell: median of repetitions, each on a fresh cluster."""
    cells = {}
    for r in read_jsonl(args.file):
        cells.setdefault(f'{r["via"]}-{r["clients"]}', []).append(r)
    out = {"seconds": args.seconds, "reps": args.reps, "cells": {}}
    for key, runs in cells.items():
        best = sorted(runs, key=lambda r: r["per_second"])[len(runs) // 2]
        out["cells"][key] = {
            "via": runs[0]["via"],
            "clients": runs[0]["clients"],
            "per_second": spread([r["per_second"] for r in runs]),
            "p50_ms": best["p50_ms"],
            "p99_ms": best["p99_ms"],
            "errors": sum(r["errors"] for r in runs),
            "runs": runs,
        }
    json.dump(out, sys.stdout, indent=1)


def b4(args):
    """Failover trials: write unavailability and routed failures after SIGKILL of the leader."""
    trials = read_jsonl(args.file)
    unavailable = [t["unavailability_ms"] for t in trials]
    recovered = [u for u in unavailable if u is not None]
    out = {
        "trials": len(trials),
        "unrecovered_trials": len(unavailable) - len(recovered),
        "unavailability_ms": {
            "p50": quantile(recovered, 0.5),
            # A trial in which no write succeeded counts as the worst.
            "max": None if len(recovered) < len(unavailable) else max(recovered, default=None),
        },
        "new_leader_ms": {
            "p50": quantile([t["new_leader_ms"] for t in trials], 0.5),
            "max": quantile([t["new_leader_ms"] for t in trials], 1.0),
        },
        "routed_failed": sum(t["routed_failed"] for t in trials),
        "routed_total": sum(t["routed_ok"] + t["routed_failed"] for t in trials),
        "routed_failure_window_ms_max": max((t["routed_failure_window_ms"] for t in trials), default=0),
        "writes_failed": sum(t["writes_failed"] for t in trials),
        "writes_ok": sum(t["writes_ok"] for t in trials),
        "acked_lost": sum(t["acked_lost"] for t in trials),
        "trials_detail": trials,
    }
    json.dump(out, sys.stdout, indent=1)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("b1")
    p.add_argument("file")
    p.add_argument("--connections", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--reps", type=int)
    p.add_argument("--cpus", type=int, default=1)
    p = sub.add_parser("oha")
    p.add_argument("file")
    p.add_argument("--rate", type=float)
    p = sub.add_parser("b2")
    p.add_argument("file")
    p.add_argument("--rate", type=float)
    p.add_argument("--seconds", type=float)
    p.add_argument("--reps", type=int)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--tool")
    p = sub.add_parser("b3")
    p.add_argument("file")
    p.add_argument("--seconds", type=float)
    p.add_argument("--reps", type=int)
    p = sub.add_parser("b4")
    p.add_argument("file")
    args = parser.parse_args()
    {"b1": b1, "oha": oha, "b2": b2, "b3": b3, "b4": b4}[args.command](args)


if __name__ == "__main__":
    main()
