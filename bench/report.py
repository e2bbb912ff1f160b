#!/usr/bin/env python3
"""Collects the JSON each benchmark left in the run's output directory into one results file
and a Markdown report: every figure next to its target (from the product brief) and next to the
reference measured in the same run. Standard library only.

    report.py --out DIR --mode quick|full --results FILE --markdown FILE [--failed "a b"]
              [--note TEXT] [--seconds N]
"""

import argparse
import json
import os

# Targets of the product brief (PRODUCT.md, "Targets"). Each check returns True when met.
TARGETS = {
    "b1_ratio": ("routed requests/s on one node vs nginx, same backend, tool and run", "≥ 1.0×"),
    "b2_p50": ("added latency over a direct call at half load, p50", "≤ 100 µs"),
    "b2_p99": ("added latency over a direct call at half load, p99", "≤ 1 ms"),
    "b3_64": ("registrations/s through Raft with durable flush, 64 concurrent clients", "≥ 5,000"),
    "b4_p50": ("write unavailability after SIGKILL of the leader, p50", "≤ 500 ms"),
    "b4_max": ("write unavailability after SIGKILL of the leader, max", "≤ 1 s"),
    "b4_routed": ("routed requests failing while the leader is killed", "0"),
    "b4_lost": ("acknowledged registrations lost (leader SIGKILL trials)", "0"),
    "b4_large": ("write unavailability after SIGKILL of the leader with a large registry, max", "≤ 2 s"),
    "b5_p50": ("registered on one node → routable on all nodes, p50", "≤ 5 ms"),
    "b5_p99": ("registered on one node → routable on all nodes, p99", "≤ 50 ms"),
    "b5_watch_p99": ("registration acknowledged → each of 100 blocking readers woken with it, p99", "≤ 50 ms"),
    "b6_rss": ("memory per node with 100,000 registrations", "≤ 150 MB"),
    "b10_log": ("Raft log entries per minute while 10,000 checked endpoints are stable", "0"),
    "b10_p99": ("endpoint killed → critical on every node, p99 (1 s tcp checks, fall 3, timeout 1 s)",
                "≤ 4,200 ms"),
}


def load(out, name):
    path = os.path.join(out, f"{name}.json")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None  # the benchmark did not run (its script has already failed the run)
    with open(path) as f:
        return json.load(f)


def cpu_spread(target):
    """min – max of a B1 target's CPU per request over its repetitions."""
    spread = target.get("cpu_us_per_request_spread")
    return f'{num(spread["min"], 1)} – {num(spread["max"], 1)}' if spread else "n/a"


def pct(share):
    return "n/a" if share is None else f"{share * 100:.2f} %"


def num(value, digits=0, unit=""):
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip() if unit else text


def signed(value):
    """A difference with its sign: +22, -16."""
    return "n/a" if value is None else f"{value:+,.0f}"


def verdict(ok):
    if ok is None:
        return "n/a"
    return "meets" if ok else "**misses**"


class Report:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.data = {n: load(args.out, n) for n in ("machine", "b1", "b2", "b3", "b4", "b4_large", "b5", "b5_watch", "b5_stream", "b6", "b10")}
        self.lines = []
        self.summary = []

    def w(self, line=""):
        self.lines.append(line)

    def table(self, header, rows):
        self.w("| " + " | ".join(header) + " |")
        self.w("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.w("| " + " | ".join(str(c) for c in row) + " |")
        self.w()

    def target(self, key, measured, reference, ok):
        what, goal = TARGETS[key]
        self.summary.append((what, goal, measured, reference, verdict(ok)))

    # --- the summary rows, one per product target ----------------------------------------------

    def summarise_b10(self):
        b10 = self.data["b10"]
        if not b10:
            for key in ("b10_log", "b10_p99"):
                self.target(key, "not measured (benchmark did not run)", "", None)
            return
        self.target("b10_log", num(b10["log_entries_per_minute"], 1),
                    f'{num(b10["endpoints"])} endpoints, {num(b10["probes"])} probes in {num(b10["window_s"])} s',
                    b10["log_entries_per_minute"] == 0)
        p99 = b10["kill_to_critical_p99_ms"]
        self.target("b10_p99", f'{num(p99)} ms', f'p50 {num(b10["kill_to_critical_p50_ms"])} ms, '
                    f'{b10["critical_everywhere"]} of {b10["killed"]} killed endpoints',
                    None if p99 is None else p99 <= b10["bound_ms"])

    def summarise(self):
        b1, b2, b3, b4, b5, b6 = (self.data[k] for k in ("b1", "b2", "b3", "b4", "b5", "b6"))
        missing = "not measured (benchmark did not run)"
        if b1:
            t = b1["targets"]
            rps = lambda n: t.get(n, {}).get("per_second", {}).get("median")  # noqa: E731
            self.target(
                "b1_ratio",
                f'{num(b1["ratio_vs_nginx"], 2)}× ({num(rps("switchboard"))} req/s)',
                f'nginx {num(rps("nginx"))}, HAProxy {num(rps("haproxy"))} '
                f'(Switchboard {num(b1["ratio_vs_haproxy"], 2)}× of it), direct {num(rps("direct"))} req/s',
                b1["ratio_vs_nginx"] is not None and b1["ratio_vs_nginx"] >= 1.0,
            )
        else:
            self.target("b1_ratio", missing, "", None)
        if b2:
            added = b2["added_us"]
            sb = added.get("switchboard", {})
            ref = lambda q: f'nginx {signed(added.get("nginx", {}).get(q))} µs, HAProxy {signed(added.get("haproxy", {}).get(q))} µs'  # noqa: E731
            self.target("b2_p50", f'{signed(sb.get("p50"))} µs', ref("p50"),
                        None if sb.get("p50") is None else sb["p50"] <= 100)
            self.target("b2_p99", f'{signed(sb.get("p99"))} µs', ref("p99"),
                        None if sb.get("p99") is None else sb["p99"] <= 1000)
        else:
            self.target("b2_p50", missing, "", None)
            self.target("b2_p99", missing, "", None)
        fsync = (self.data["machine"] or {}).get("fdatasync", {})
        if b3:
            c = b3["cells"]
            lead = c.get("leader-64", {}).get("per_second", {}).get("median")
            foll = c.get("follower-64", {}).get("per_second", {}).get("median")
            self.target(
                "b3_64",
                f"{num(lead)}/s to the leader, {num(foll)}/s through a follower",
                f'one writer\'s fdatasync ceiling on this disk: {num(fsync.get("per_second"))}/s',
                None if lead is None else min(lead, foll or lead) >= 5000,
            )
        else:
            self.target("b3_64", missing, "", None)
        if b4:
            u = b4["unavailability_ms"]
            nl = b4["new_leader_ms"]
            ref = f'new leader seen after p50 {num(nl["p50"])} ms, max {num(nl["max"])} ms ({b4["trials"]} trials)'
            self.target("b4_p50", f'{num(u["p50"])} ms', ref, None if u["p50"] is None else u["p50"] <= 500)
            self.target("b4_max", f'{num(u["max"])} ms' if u["max"] is not None else "a trial never recovered",
                        ref, u["max"] is not None and u["max"] <= 1000)
            self.target("b4_routed", f'{b4["routed_failed"]} of {num(b4["routed_total"])}',
                        "requests sent straight to the surviving nodes (no load balancer in between)",
                        b4["routed_failed"] == 0)
            self.target("b4_lost", f'{b4["acked_lost"]} of {num(b4["writes_ok"])} acknowledged', "",
                        b4["acked_lost"] == 0)
        else:
            for key in ("b4_p50", "b4_max", "b4_routed", "b4_lost"):
                self.target(key, missing, "", None)
        large = self.data["b4_large"]
        if large:
            u = large["unavailability_ms"]
            self.target("b4_large", f'{num(u["max"])} ms' if u["max"] is not None else "a trial never recovered",
                        f'{large["state_mb"]} MB in {num(large["registrations"])} registrations, '
                        f'{large["trials"]} trials, {large["acked_lost"]} acknowledged writes lost',
                        u["max"] is not None and u["max"] <= 2000 and large["acked_lost"] == 0)
        else:
            self.target("b4_large", missing, "", None)
        if b5:
            self.target("b5_p50", f'{num(b5["p50_ms"], 2)} ms', f'{b5["measured"]} registrations; '
                        f'acknowledgement itself took p50 {num(b5["register_p50_ms"], 2)} ms',
                        None if b5["p50_ms"] is None else b5["p50_ms"] <= 5)
            self.target("b5_p99", f'{num(b5["p99_ms"], 2)} ms', f'max {num(b5["max_ms"], 2)} ms',
                        None if b5["p99_ms"] is None else b5["p99_ms"] <= 50)
        else:
            self.target("b5_p50", missing, "", None)
            self.target("b5_p99", missing, "", None)
        watch = self.data["b5_watch"]
        if watch:
            self.target("b5_watch_p99", f'{num(watch["after_ack_p99_ms"], 2)} ms',
                        f'from the write sent (its commit included) p50 {num(watch["p50_ms"], 2)}, p99 '
                        f'{num(watch["p99_ms"], 2)} ms; {watch["measured"]} registrations, '
                        f'{num(watch["missed"])} wake-ups missed',
                        None if watch["after_ack_p99_ms"] is None
                        else watch["after_ack_p99_ms"] <= 50 and watch["missed"] == 0)
        else:
            self.target("b5_watch_p99", missing, "", None)
        if b6:
            loaded = [s for s in b6["stages"] if s["stage"] not in ("idle", "settled", "after-restart")][-1]
            settled = next((s for s in b6["stages"] if s["stage"] == "settled"), loaded)
            mb = settled["rss_mib_max"] * 2**20 / 1e6
            self.target("b6_rss", f'{num(mb, 1)} MB (largest node, settled) with {num(settled["registrations"])} '
                        'registrations',
                        f'right after the load {num(loaded["rss_mib_max"] * 2**20 / 1e6, 1)} MB; '
                        f'idle {num(b6["stages"][0]["rss_mib_max"] * 2**20 / 1e6, 1)} MB',
                        mb <= 150 if settled["registrations"] >= 100_000 else None)
        else:
            self.target("b6_rss", missing, "", None)

    # --- sections --------------------------------------------------------------------------------

    def header(self):
        m = self.data["machine"] or {}
        mode = self.args.mode
        self.w("# Benchmarks")
        self.w()
        self.w(f"Generated by `bash bench/run.sh{' --quick' if mode == 'quick' else ''}` "
               f"({'quick mode: a few seconds per benchmark, figures are only indicative' if mode == 'quick' else 'full run'}) "
               f"on {m.get('date_utc', 'an unknown date')}, commit `{m.get('commit')}`"
               f"{' with local changes' if m.get('worktree_dirty') else ''}, in {self.args.seconds} s. "
               "Definitions of B1 to B7: the scripts under `bench/` (each states what it measures at the top). "
               "Targets are those of the product brief; references are measured in the same run on the same machine.")
        self.w()
        if self.args.note:
            self.w(f"**Conditions:** {self.args.note}")
            self.w()
        load = m.get("load_average_at_start")
        if load:
            self.w(f"Load average when the run started: {', '.join(f'{x:.2f}' for x in load)} (1, 5, 15 min).")
            self.w()
        if self.args.failed.strip():
            self.w(f"**Benchmarks that could not run:** {self.args.failed}.")
            self.w()

    def machine(self):
        m = self.data["machine"]
        if not m:
            return
        f = m["fdatasync"]
        t = m["tools"]
        self.w("## Machine")
        self.w()
        self.table(["what", "value"], [
            ("CPUs (nproc)", m["nproc"]),
            ("CPU model", m["cpu_model"]),
            ("memory", f'{num(m["mem_total_mib"])} MiB'),
            ("kernel", m["kernel"]),
            ("disk: 256 B write + fdatasync", f'p50 {f["p50_ms"]:.3f} ms, p99 {f["p99_ms"]:.3f} ms, '
                                              f'{num(f["per_second"])}/s for one writer ({f["iterations"]} appends)'),
            ("rustc", t.get("rustc")),
            ("wrk", t.get("wrk")),
            ("oha", t.get("oha") or "not installed (B2 used benchkit openloop)"),
            ("nginx", t.get("nginx")),
            ("HAProxy", t.get("haproxy")),
            ("hyperfine", t.get("hyperfine")),
        ])

    def targets(self):
        self.w("## Against the targets")
        self.w()
        self.table(["what", "target", "measured", "reference in the same run", "verdict"], self.summary)

    def b1(self):
        b1 = self.data["b1"]
        self.w("## B1: routed requests/s on one core")
        self.w()
        if not b1:
            self.w("Not measured (the benchmark did not run).")
            self.w()
            return
        self.w("One trivial backend (nginx `return 200 \"ok\"`) reached directly and through each proxy. "
               "Each proxy has one worker (Switchboard `--worker-threads 1`, nginx `worker_processes 1`, "
               "HAProxy `nbthread 1`) pinned to core 0; the load tool and the backend share core 1. "
               f'Load: `{b1["tool"]}`, closed loop, after a warm-up run; each repetition runs every target '
               "once, so drift in the machine hits all alike. nginx and HAProxy add the forwarding headers "
               "Switchboard adds (`X-Forwarded-For`, `-Proto`, `-Host`, `Via`). CPU per request: utime+stime of "
               "the serving processes over the measured run divided by the requests served; CPU use near 100% "
               "means the proxy was the bottleneck, well below means the client core was. "
               f'CPU steal: at most {pct(b1.get("steal_max"))} of the machine in any run.')
        self.w()
        rows = []
        sb = b1["targets"].get("switchboard", {}).get("per_second", {}).get("median")
        for name in ("direct", "nginx", "haproxy", "switchboard", "switchboard-general"):
            t = b1["targets"].get(name)
            if not t:
                continue
            r = t["per_second"]
            rows.append((name, num(r["median"]), f'{num(r["min"])} – {num(r["max"])}',
                         num(sb / r["median"], 2) + "×" if sb else "n/a",
                         num(t["cpu_us_per_request"], 1), cpu_spread(t), f'{t["cpu_utilisation"] * 100:.0f}%'))
        self.table(["target", "req/s (median)", "min – max", "Switchboard ÷ this", "CPU µs/request (median)",
                    "min – max", "CPU use"], rows)
        self.w(f'Switchboard CPU per request ÷ nginx: {num(b1["cpu_ratio_vs_nginx"], 2)}×. '
               "For `direct` the CPU figures are the backend's. `switchboard-general` is the same node and "
               "request with `X-Switchboard-Explain: 0`, which hands it from Switchboard's own HTTP/1.1 "
               "loop to its general (hyper) path: the loop's before and after, in the same run.")
        self.w()
        soap = [(name, b1["targets"].get(name)) for name in
                ("direct-soap", "nginx-soap", "haproxy-soap", "switchboard-soapaction",
                 "switchboard-general-soapaction", "switchboard-body")]
        soap = [(name, t) for name, t in soap if t]
        if soap:
            self.w("The same targets with a SOAP call: POST of a 2 KB SOAP 1.1 envelope with a dozen headers. "
                   "Switchboard routes it by its SOAPAction (`switchboard-soapaction`) or, with an empty "
                   "SOAPAction, by reading the envelope up to its body's first element (`switchboard-body`); "
                   "nginx and HAProxy pass it on without looking. `switchboard-general-soapaction`: the "
                   "SOAPAction call through the general path (see above).")
            self.w()
            nginx = b1["targets"].get("nginx-soap", {}).get("per_second", {}).get("median")
            rows = []
            for name, t in soap:
                r = t["per_second"]
                rows.append((name, num(r["median"]), f'{num(r["min"])} – {num(r["max"])}',
                             num(r["median"] / nginx, 2) + "×" if nginx else "n/a",
                             num(t["cpu_us_per_request"], 1), cpu_spread(t), f'{t["cpu_utilisation"] * 100:.0f}%'))
            self.table(["target", "req/s (median)", "min – max", "this ÷ nginx", "CPU µs/request (median)",
                        "min – max", "CPU use"], rows)
        wsa = [(name, b1["targets"].get(name)) for name in ("direct-wsa", "nginx-wsa", "switchboard-wsa")]
        wsa = [(name, t) for name, t in wsa if t]
        if wsa:
            self.w("A WCF client's call: SOAP 1.2 with WS-Addressing 1.0 (the action in the content type, "
                   "an envelope header with Action, MessageID, ReplyTo and To), the same body. Switchboard "
                   "routes it by the content type's action, reads the envelope header and rewrites its `To` "
                   "to the endpoint's address; nginx passes it on as it is.")
            self.w()
            nginx = b1["targets"].get("nginx-wsa", {}).get("per_second", {}).get("median")
            rows = []
            for name, t in wsa:
                r = t["per_second"]
                rows.append((name, num(r["median"]), f'{num(r["min"])} – {num(r["max"])}',
                             num(r["median"] / nginx, 2) + "×" if nginx else "n/a",
                             num(t["cpu_us_per_request"], 1), cpu_spread(t), f'{t["cpu_utilisation"] * 100:.0f}%'))
            self.table(["target", "req/s (median)", "min – max", "this ÷ nginx", "CPU µs/request (median)",
                        "min – max", "CPU use"], rows)
            action = b1["targets"].get("switchboard-soapaction", {}).get("cpu_us_per_request")
            rewrite = b1["targets"].get("switchboard-wsa", {}).get("cpu_us_per_request")
            if action and rewrite:
                self.w(f"CPU per request, `switchboard-wsa` − `switchboard-soapaction`: "
                       f"{num(rewrite - action, 1)} µs (the header scan and the `To` rewrite, with the "
                       "larger header's bytes).")
                self.w()

    def b2(self):
        b2 = self.data["b2"]
        self.w("## B2: added latency at half load")
        self.w()
        if not b2:
            self.w("Not measured (the benchmark did not run).")
            self.w()
            return
        tool = ("`oha -q RATE --latency-correction -c 64` (open loop; latency counted from when each request was due)"
                if b2["tool"] == "oha" else "`benchkit openloop` (open loop; latency counted from when each request was due)")
        self.w(f'Fixed rate {num(b2["rate"])} req/s (half the slowest proxy\'s B1 median) for {num(b2["seconds"])} s '
               f'per target and repetition ({b2.get("reps", 1)} repetitions, targets interleaved in each), with {tool}, '
               "same pinning as B1. Added = via the proxy minus the direct call of the same repetition, per "
               "percentile; latencies are medians over the repetitions, and the added figures show their median "
               f'with min – max. CPU steal: at most {pct(b2.get("steal_max"))} of the machine in any run.')
        self.w()
        rows = []
        for name in ("direct", "nginx", "haproxy", "switchboard", "switchboard-general"):
            r = b2["runs"].get(name)
            if not r:
                continue
            a = b2["added_us"].get(name, {})
            achieved = r.get("achieved_per_second")
            spread = b2.get("added_us_spread", {}).get(name, {})
            added = "—" if name == "direct" else " / ".join(
                signed(a.get(q)) + (f' ({signed(spread[q][0])} – {signed(spread[q][1])})' if q in spread else "")
                for q in ("p50", "p99", "p999"))
            busy = r.get("core_busy")
            cpu = r.get("cpu_us_per_request")
            rows.append((name, num(r["p50_ms"] * 1e3), num(r["p99_ms"] * 1e3), num(r["p999_ms"] * 1e3), added,
                         num(achieved) if achieved is not None else "n/a", r["errors"],
                         "n/a" if busy is None else f"{pct(busy)} ({num(cpu, 1)} µs)"))
        self.table(["target", "p50 µs", "p99 µs", "p99.9 µs", "added p50 / p99 / p99.9 µs (min – max)",
                    "achieved req/s", "errors", "its core busy (CPU per request)"], rows)
        self.w("An achieved rate below the requested one means the load tool or the target could not keep up, "
               "and that target's latencies include queueing. `switchboard-general` is the same node with "
               "each request handed to its general (hyper) path (`X-Switchboard-Explain: 0`, as in B1). The "
               "last column is the target's processes' CPU time over the run (the direct call's: the backend's).")
        self.w()

    def b3(self):
        b3 = self.data["b3"]
        self.w("## B3: registrations/s through Raft")
        self.w()
        if not b3:
            self.w("Not measured (the benchmark did not run).")
            self.w()
            return
        self.w(f'3 nodes on loopback, default durability (acknowledged after a majority flushed it), `regload` '
               f'registering unique addresses for {num(b3["seconds"])} s per cell, a fresh cluster per cell, '
               f'median of {b3["reps"]}.')
        self.w()
        rows = []
        for key in ("leader-1", "follower-1", "leader-64", "follower-64"):
            c = b3["cells"].get(key)
            if not c:
                continue
            p = c["per_second"]
            rows.append((c["clients"], c["via"], num(p["median"]), f'{num(p["min"])} – {num(p["max"])}',
                         num(c["p50_ms"], 2), num(c["p99_ms"], 2), c["errors"]))
        self.table(["clients", "sent to", "registrations/s", "min – max", "p50 ms", "p99 ms", "errors"], rows)
        fsync = (self.data["machine"] or {}).get("fdatasync", {})
        lead = b3["cells"].get("leader-64", {}).get("per_second", {}).get("median")
        if fsync.get("per_second") and lead:
            self.w(f'Batching factor (64 clients to the leader ÷ one writer\'s fdatasync/s): '
                   f'{lead / fsync["per_second"]:.2f}.')
            self.w()

    def b4(self):
        b4 = self.data["b4"]
        self.w("## B4: failover")
        self.w()
        if not b4:
            self.w("Not measured (the benchmark did not run).")
            self.w()
            return
        self.w("3 nodes and one backend. Per trial: a write (new registration) every 5 ms to a random surviving "
               "node and 400 routed req/s spread over the surviving nodes; after 1 s the leader gets SIGKILL. "
               "Write unavailability = from the kill to the first acknowledged write sent after it. The killed "
               "node is restarted and every node must be ready before the next trial. Afterwards a linearizable "
               "read checks that every acknowledged write is present.")
        self.w()
        u, nl = b4["unavailability_ms"], b4["new_leader_ms"]
        self.table(["what", "value"], [
            ("trials", b4["trials"]),
            ("write unavailability p50 / max", f'{num(u["p50"])} / {num(u["max"])} ms'),
            ("trials with no write acknowledged within 10 s", b4["unrecovered_trials"]),
            ("new leader visible (polling every 5 ms) p50 / max", f'{num(nl["p50"])} / {num(nl["max"])} ms'),
            ("routed requests failed / sent", f'{b4["routed_failed"]} / {num(b4["routed_total"])}'),
            ("longest span of routed failures in a trial", f'{num(b4["routed_failure_window_ms_max"])} ms'),
            ("writes acknowledged / failed (3 s client timeout)", f'{num(b4["writes_ok"])} / {b4["writes_failed"]}'),
            ("acknowledged writes lost", b4["acked_lost"]),
        ])
        per = ", ".join(num(t["unavailability_ms"]) if t["unavailability_ms"] is not None else "none"
                        for t in b4["trials_detail"])
        self.w(f"Per trial (ms): {per}.")
        self.w()
        large = self.data["b4_large"]
        if large:
            u, nl = large["unavailability_ms"], large["new_leader_ms"]
            self.w(f'**Large state.** The same trial after filling the registry with {num(large["registrations"])} '
                   f'registrations of 15 KiB of metadata ({large["state_mb"]} MB): {large["trials"]} trials, write '
                   f'unavailability p50 / max {num(u["p50"])} / {num(u["max"])} ms, new leader visible p50 / max '
                   f'{num(nl["p50"])} / {num(nl["max"])} ms, routed requests failed {large["routed_failed"]} of '
                   f'{num(large["routed_total"])}, acknowledged writes lost {large["acked_lost"]} of '
                   f'{num(large["writes_ok"])}.')
            self.w()

    def b5(self):
        b5 = self.data["b5"]
        self.w("## B5: propagation")
        self.w()
        if not b5:
            self.w("Not measured (the benchmark did not run).")
            self.w()
            return
        self.w(f'{b5["measured"]} registrations, one at a time, each of a fresh contract and sent to the nodes in '
               "turn. From the acknowledgement, the data plane of all three nodes is polled with that contract "
               "until each routes it to the backend; the figure per registration is the slowest node's time to "
               "its first routed answer (the poll's round trip included).")
        self.w()
        self.table(["what", "value"], [
            ("p50 / p99 / max", f'{num(b5["p50_ms"], 2)} / {num(b5["p99_ms"], 2)} / {num(b5["max_ms"], 2)} ms'),
            ("per node p50 / p99",
             "; ".join(f'node {i + 1}: {num(n["p50_ms"], 2)} / {num(n["p99_ms"], 2)} ms'
                       for i, n in enumerate(b5["per_node"]))),
            ("registrations not routable within 5 s", b5["timeouts"]),
            ("registrations refused", b5["errors"]),
        ])
        watch = self.data["b5_watch"]
        if watch:
            self.w(f'Blocking reads on the same cluster: {watch["watchers"]} watchers of one contract, spread over the '
                   "three nodes, each reading again with the index of its last answer (`?index=&wait=`); "
                   f'{watch["measured"]} registrations into that contract, one at a time through the nodes in turn. '
                   "Per registration and watcher: the time from the registration sent (its commit included) to "
                   "the answer that holds it; and from its acknowledgement (a watcher woken before the "
                   "acknowledgement arrived counts as zero). Every wake-up answers the contract's whole list "
                   "(up to 200 registrations here) to each of the watchers, so the writes themselves wait for "
                   "that work: the difference between the two figures.")
            self.w()
            self.table(["what", "value"], [
                ("registration sent → watcher woken, p50 / p99 / max",
                 f'{num(watch["p50_ms"], 2)} / {num(watch["p99_ms"], 2)} / {num(watch["max_ms"], 2)} ms'),
                ("acknowledged → watcher woken, p50 / p99",
                 f'{num(watch["after_ack_p50_ms"], 2)} / {num(watch["after_ack_p99_ms"], 2)} ms'),
                ("registration sent → the last of the watchers woken, p50 / p99",
                 f'{num(watch["slowest_p50_ms"], 2)} / {num(watch["slowest_p99_ms"], 2)} ms'),
                ("wake-ups missed (a watcher without the registration after 5 s)", num(watch["missed"])),
                ("blocking reads answered", num(watch["reads"])),
                ("registrations refused", watch["errors"]),
            ])
        stream = self.data["b5_stream"]
        if watch and stream:
            self.w(f'The same {stream["watchers"]} watchers and {stream["changes"]} registrations with the event stream '
                   "(`GET /v1/events?contract=`): each change is sent once to each stream instead of the whole list.")
            self.w()
            rows = []
            for label, key in (("registration sent → watcher woken, p50", "p50_ms"),
                               ("registration sent → watcher woken, p99", "p99_ms"),
                               ("acknowledged → watcher woken, p99", "after_ack_p99_ms"),
                               ("registration sent → the last of the watchers woken, p99", "slowest_p99_ms")):
                rows.append((label, f'{num(watch[key], 2)} ms', f'{num(stream[key], 2)} ms'))
            rows.append(("wake-ups missed", num(watch["missed"]), num(stream["missed"])))
            self.table(["what", "blocking reads", "event stream"], rows)

    def b6(self):
        b6 = self.data["b6"]
        self.w("## B6: memory and disk; B7: restart")
        self.w()
        if not b6:
            self.w("Not measured (the benchmark did not run).")
            self.w()
            return
        self.w(f'3 nodes with `--snapshot-every {b6["snapshot_every"]}`; registrations of '
               f'{num(b6["payload_bytes_avg"])} bytes of JSON on average, 64 clients spread over the nodes. '
               "Before each measurement every node has applied the same index and snapshotted the log written "
               "so far (then purged it). RSS = VmRSS; disk = bytes under the node's data directory.")
        self.w()
        rows = []
        for s in b6["stages"]:
            raw = next(r for r in b6["raw"] if r["stage"] == s["stage"])
            snap = ", ".join("none" if n["snapshot_index"] is None else str(n["snapshot_index"]) for n in raw["nodes"])
            rows.append((s["stage"], num(s["registrations"]), f'{s["rss_mib_mean"]:.1f} / {s["rss_mib_max"]:.1f}',
                         f'{s["data_dir_mib_mean"]:.2f} / {s["data_dir_mib_max"]:.2f}', snap))
        self.table(["stage", "registrations", "RSS MiB mean / max", "data dir MiB mean / max",
                    "snapshot index per node"], rows)
        self.w(f'Memory per registration (mean RSS growth from idle): {num(b6["rss_bytes_per_registration"])} bytes. '
               f'Disk per registration: {num(b6["disk_bytes_per_registration"])} bytes, '
               f'{num(b6["disk_x_payload"], 2)}× the payload.')
        self.w()
        b7 = b6["b7"]
        self.w(f'**B7:** restart of a follower (node {b7["node"]}) holding {num(b7["registrations"])} registrations, '
               f'from `switchboard serve` to `/health/ready` answering 200 (polled with curl every 20 ms), timed by '
               f'hyperfine over {b7["runs"]} runs (graceful stop before each): mean {b7["mean_s"] * 1e3:.0f} ms, median {b7["median_s"] * 1e3:.0f} ms, '
               f'min {b7["min_s"] * 1e3:.0f} ms, max {b7["max_s"] * 1e3:.0f} ms. The `after-restart` row above is '
               "the cluster after these restarts.")
        self.w()

    def b10(self):
        b10 = self.data["b10"]
        self.w("## B10: active health checks")
        self.w()
        if not b10:
            self.w("Not measured (the benchmark did not run).")
            self.w()
            return
        self.w(f'{num(b10["endpoints"])} endpoints (local listeners that accept and close) on three nodes, each with '
               f'a tcp check every {b10["interval_ms"]} ms (timeout 1 s, fall 3). Over a stable window of '
               f'{num(b10["window_s"], 1)} s: every node\'s CPU (utime + stime of the whole process, so an upper '
               "bound of the probes' cost), the probes each node ran and the Raft log entries written. Then "
               f'{b10["killed"]} endpoints are closed at once, and for each the time until every node lists it critical '
               "(each node's `GET /v1/registrations?health=critical` polled every 50 ms).")
        self.w()
        per_node = "; ".join(f'node {n["id"]}: {num(n["probes_per_s"])}/s, {num(n["cpu_s"], 2)} s CPU, '
                             f'{num(n["late"])} late' for n in b10["per_node"])
        self.table(["what", "value"], [
            ("probes in the window (expected: endpoints × window / interval)",
             f'{num(b10["probes"])} ({num(b10["probes_expected"])})'),
            ("CPU per probe, all nodes", f'{num(b10["cpu_us_per_probe"], 1)} µs'),
            ("per node", per_node),
            ("log entries per minute while stable", num(b10["log_entries_per_minute"], 1)),
            ("killed → critical everywhere, p50 / p99 / max",
             f'{num(b10["kill_to_critical_p50_ms"])} / {num(b10["kill_to_critical_p99_ms"])} / '
             f'{num(b10["kill_to_critical_max_ms"])} ms ({b10["critical_everywhere"]} of {b10["killed"]}; '
             f'bound {num(b10["bound_ms"])} ms)'),
        ])

    def durations(self):
        rows = []
        for name in ("dataplane", "registrations", "failover", "propagation", "footprint", "health"):
            path = os.path.join(self.out, f"{name}.seconds")
            if os.path.exists(path):
                with open(path) as f:
                    rows.append((name, f.read().strip()))
        if rows:
            self.w("## Run time per script (s)")
            self.w()
            self.table(["script", "seconds"], rows)

    def by_hand(self, name):
        """A section kept by hand (bench/NAME.md): it changes with the code, not with each run."""
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.w(f.read().strip())
            self.w()

    def render(self):
        self.summarise()
        self.summarise_b10()
        self.header()
        self.machine()
        self.targets()
        self.b1()
        self.b2()
        self.b3()
        self.b4()
        self.b5()
        self.b6()
        self.b10()
        self.durations()
        self.by_hand("history.md")
        self.by_hand("profile.md")
        return "\n".join(self.lines).rstrip() + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=("quick", "full"), required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--failed", default="")
    parser.add_argument("--note", default="")
    parser.add_argument("--seconds", default="?")
    args = parser.parse_args()
    report = Report(args)
    markdown = report.render()
    results = {
        "mode": args.mode,
        "note": args.note or None,
        "failed": args.failed.split(),
        "targets": [dict(zip(("what", "target", "measured", "reference", "verdict"), row)) for row in report.summary],
        **{k: v for k, v in report.data.items()},
    }
    with open(args.results, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(args.markdown, "w") as f:
        f.write(markdown)
    # A short summary on the terminal.
    for what, goal, measured, _, ok in report.summary:
        print(f"{ok:>12}  {what}: {measured} (target {goal})")


if __name__ == "__main__":
    main()
