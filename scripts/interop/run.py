#!/usr/bin/env python3
"""The SOAP interop matrix: real SOAP stacks, as client and as service, through a follower of a
three-node Switchboard cluster on loopback.

Services (one registered at a time, bound to the path /calc): spyne (Python), PHP's ext/soap
SoapServer, SOAP::Lite (Perl). Clients, each with its stack's default settings:
  zeep (Python) and PHP SoapClient generated from the WSDL fetched through the router
  (GET /calc?wsdl, whose address the router sets to itself: routed by the path), the same two
  told to call the router's root instead (routed by the body's namespace), and SOAP::Lite
  without a WSDL (its "NAMESPACE#Add" action, routed by the body's namespace).
Then a zeep client generated from GET /v1/soap/registration?wsdl registers an endpoint,
which is routable, and unregisters it, which is not.

Which rule routed each call is read from the follower's switchboard_route_decisions_total.

Usage: run.py --bin PATH/TO/switchboard --python PATH/TO/venv/python [--out docs/interop.md]
Exit status 1 if any cell fails.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "interop-cluster-secret-0123456789"
DEADLINE = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=5.0):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


def eventually(what, check, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Processes:
    """Every process started here; all are killed at the end, their logs kept."""

    def __init__(self, logs):
        self.logs, self.running = logs, []

    def start(self, name, argv, env=None, cwd=None):
        log = open(os.path.join(self.logs, f"{name}.log"), "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.running.append((name, process))
        return process

    def stop(self, process):
        process.kill()
        process.wait()

    def stop_all(self):
        for _, process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait()


class Cluster:
    def __init__(self, processes, binary, base):
        self.nodes = {}
        peer_ports = {n: free_port() for n in (1, 2, 3)}
        peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in peer_ports.items())
        env = dict(os.environ, SWITCHBOARD_CLUSTER_SECRET=SECRET)
        for n in (1, 2, 3):
            data, api = free_port(), free_port()
            argv = [
                binary, "serve", "--node-id", str(n), "--data-dir", os.path.join(base, f"node{n}"),
                "--data-addr", f"127.0.0.1:{data}", "--api-addr", f"127.0.0.1:{api}",
                "--peer-addr", f"127.0.0.1:{peer_ports[n]}", "--peers", peers,
            ]
            processes.start(f"node{n}", argv, env=env)
            self.nodes[n] = {"data": f"http://127.0.0.1:{data}", "api": f"http://127.0.0.1:{api}"}

    def leader(self):
        for node in self.nodes.values():
            status, body = http("GET", node["api"] + "/v1/cluster")
            if status == 200:
                leader = json.loads(body).get("leader_id")
                if leader:
                    return leader
        return None

    def follower(self):
        leader = eventually("a leader", self.leader)
        for n in self.nodes:
            eventually(f"node {n} ready", lambda n=n: http("GET", self.nodes[n]["api"] + "/health/ready")[0] == 200)
        return next(n for n in self.nodes if n != leader)

    def decisions(self, node):
        status, text = http("GET", self.nodes[node]["api"] + "/metrics")
        if status != 200:
            raise RuntimeError(f"metrics: {status}")
        return {m.group(1): int(m.group(2)) for m in re.finditer(r'switchboard_route_decisions_total\{rule="([^"]+)"\} (\d+)', text)}


def version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--python", required=True, help="the Python that has zeep and spyne")
    parser.add_argument("--out", help="write the matrix here (Markdown)")
    args = parser.parse_args()
    args.python = os.path.abspath(args.python)

    base = tempfile.mkdtemp(prefix="switchboard-interop-")
    processes = Processes(base)
    failed = False
    try:
        cluster = Cluster(processes, os.path.abspath(args.bin), base)
        via = cluster.follower()
        data, api = cluster.nodes[via]["data"], cluster.nodes[via]["api"]

        services = {
            "spyne (Python)": lambda port, ns: [args.python, os.path.join(HERE, "spyne_service.py"), str(port), ns],
            "PHP SoapServer": lambda port, ns: ["php", "-S", f"127.0.0.1:{port}", os.path.join(HERE, "php_service.php")],
            "SOAP::Lite (Perl)": lambda port, ns: ["perl", os.path.join(HERE, "perl_service.pl"), str(port), ns],
        }
        clients = {
            "zeep, WSDL through the router": lambda ns: [args.python, os.path.join(HERE, "zeep_client.py"), f"{data}/calc?wsdl", "2", "3"],
            "zeep, calling the router's root": lambda ns: [args.python, os.path.join(HERE, "zeep_client.py"), f"{data}/calc?wsdl", "2", "3", f"{data}/"],
            "PHP SoapClient, WSDL through the router": lambda ns: ["php", os.path.join(HERE, "php_client.php"), f"{data}/calc?wsdl", "2", "3"],
            "PHP SoapClient, calling the router's root": lambda ns: ["php", os.path.join(HERE, "php_client.php"), f"{data}/calc?wsdl", "2", "3", f"{data}/"],
            "SOAP::Lite (Perl), no WSDL": lambda ns: ["perl", os.path.join(HERE, "perl_client.pl"), f"{data}/", ns, "2", "3"],
        }
        matrix = {}
        for service, command in services.items():
            slug = re.sub(r"[^a-z]+", "-", service.lower()).strip("-")
            namespace = f"urn:interop:{slug}"
            port = free_port()
            process = processes.start(slug, command(port, namespace), env=dict(os.environ, INTEROP_NS=namespace), cwd=HERE)
            eventually(f"{service} listening", lambda: http("GET", f"http://127.0.0.1:{port}/calc?wsdl")[0] == 200)
            registration = {
                "address": f"http://127.0.0.1:{port}/calc", "contract_namespace": namespace,
                "contract_name": "ICalculator", "metadata": {"route.path": "/calc"},
            }
            status, body = http("POST", api + "/v1/registrations", json.dumps(registration).encode(), {"content-type": "application/json"})
            if status not in (200, 201):
                raise RuntimeError(f"registering {service}: {status} {body}")
            registered = json.loads(body)
            eventually(f"{service} routable", lambda: http("GET", f"{data}/calc?wsdl")[0] == 200)
            for client, argv in clients.items():
                before = cluster.decisions(via)
                run = subprocess.run(argv(namespace), capture_output=True, text=True, timeout=60, cwd=HERE)
                after = cluster.decisions(via)
                rules = sorted(rule for rule in after if after[rule] > before.get(rule, 0))
                passed = run.returncode == 0 and run.stdout.strip().splitlines()[-1:] == ["5"]
                detail = "" if passed else (run.stderr.strip() or run.stdout.strip()).splitlines()[-1:]
                matrix[(client, service)] = (passed, rules, " ".join(detail)[:160])
                failed |= not passed
                print(f"{'PASS' if passed else 'FAIL'} {client} -> {service}: {', '.join(rules)} {'' if passed else detail}", flush=True)
            http("DELETE", f"{api}/v1/registrations/{registered['id']}")
            eventually(f"{service} unrouted", lambda: http("GET", f"{data}/calc?wsdl")[0] != 200)
            processes.stop(process)

        # The registration service's own WSDL: a generated client registers, then unregisters.
        port = free_port()
        namespace = "urn:interop:registered"
        process = processes.start("registered", services["PHP SoapServer"](port, namespace), env=dict(os.environ, INTEROP_NS=namespace), cwd=HERE)
        eventually("the registered service listening", lambda: http("GET", f"http://127.0.0.1:{port}/calc?wsdl")[0] == 200)
        registrar = [args.python, os.path.join(HERE, "zeep_registrar.py"), f"{api}/v1/soap/registration?wsdl"]
        address = f"http://127.0.0.1:{port}/calc"
        steps = []
        run = subprocess.run(registrar + ["register", address, "ICalculator", namespace], capture_output=True, text=True, timeout=60)
        steps.append(("Register through a zeep client generated from the registration WSDL", run.returncode == 0, run.stderr.strip()[-200:]))
        call = ["perl", os.path.join(HERE, "perl_client.pl"), f"{data}/", namespace, "2", "3"]
        routable = False
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and not routable:
            routed = subprocess.run(call, capture_output=True, text=True, timeout=60)
            routable = routed.returncode == 0 and routed.stdout.strip() == "5"
        steps.append(("The registered endpoint is routable (SOAP::Lite call through the follower)", routable, ""))
        run = subprocess.run(registrar + ["unregister", address, "ICalculator", namespace], capture_output=True, text=True, timeout=60)
        steps.append(("Unregister through the same client", run.returncode == 0, run.stderr.strip()[-200:]))
        gone = eventually("the endpoint unrouted", lambda: subprocess.run(call, capture_output=True, text=True, timeout=60).returncode != 0)
        steps.append(("The endpoint is no longer routable", bool(gone), ""))
        processes.stop(process)
        for what, passed, detail in steps:
            failed |= not passed
            print(f"{'PASS' if passed else 'FAIL'} {what} {detail}", flush=True)

        if args.out:
            write_report(args, services, clients, matrix, steps)
    finally:
        processes.stop_all()
        if failed:
            print(f"logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


def write_report(args, services, clients, matrix, steps):
    stacks = [
        ("zeep", version([args.python, "-c", "import zeep; print(zeep.__version__)"])),
        ("spyne", version([args.python, "-c", "import spyne; print(spyne.__version__)"])),
        ("PHP ext/soap", version(["php", "-r", "echo PHP_VERSION;"])),
        ("SOAP::Lite", version(["perl", "-MSOAP::Lite", "-e", "print $SOAP::Lite::VERSION"])),
    ]
    lines = [
        "# SOAP interop matrix",
        "",
        "Written by `scripts/interop/run.py` (run by the test command). Every client calls every",
        "service through a follower of a three-node cluster on loopback, with its stack's default",
        "settings; a cell names the rule that routed the call (`switchboard_route_decisions_total`",
        "on the follower; `path` for the `GET ?wsdl` too). Each service is registered in its own",
        "namespace with `route.path` `/calc`, one at a time.",
        "",
        "What the calls carry: the SOAPAction each service's WSDL names (spyne: the bare operation",
        "name `Add`; the PHP service: an empty `\"\"`, as JAX-WS and CXF publish; the SOAP::Lite",
        "service: `NAMESPACE#Add`, SOAP::Lite's convention) or, for the SOAP::Lite client, its own",
        "`NAMESPACE#Add`; none of them names a contract, so the call is routed by the path the",
        "WSDL's address names (the router rewrites that address to itself when the WSDL is fetched",
        "through it) or, for clients told to call the router's root (the one setting changed), by the",
        "namespace of the body's first element. A client without a WSDL sends SOAP::Lite's encoded",
        "rpc body; the services still read it.",
        "",
        "Stacks: " + ", ".join(f"{name} {v}" for name, v in stacks) + ".",
        "",
        "| client \\ service | " + " | ".join(services) + " |",
        "|---|" + "---|" * len(services),
    ]
    for client in clients:
        cells = []
        for service in services:
            passed, rules, detail = matrix[(client, service)]
            cell = ("pass: " if passed else "**fail**: ") + ", ".join(rules)
            if detail:
                cell += f" ({detail.replace('|', '/')})"
            cells.append(cell)
        lines.append(f"| {client} | " + " | ".join(cells) + " |")
    lines += ["", "## The registration service's WSDL", ""]
    lines += [f"- {'pass' if passed else '**fail**'}: {what}" for what, passed, _ in steps]
    lines.append("")
    with open(args.out, "w") as out:
        out.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
