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

What each cell asserts, from the follower's counters read before and after the client ran
(switchboard_route_decisions_total by rule, switchboard_route_errors_total by code) and from
the client program's exit status and output:
  pass           the client printed the sum, the router answered no error, and the rules it
                 counted are exactly EXPECTED_RULES for the cell (one per request);
  wrong rule     the sum came back, but through other rules than the cell expects;
  wrong answer   the client printed another number;
  unrouted       the router answered an error (a fault or an error status) to a request of
                 the client, whatever the client made of it;
  service fault  the client reported a fault (exit status FAULT_EXIT) that the router did not
                 answer: it came from the service;
  client crashed the client died for another reason (another exit status, a traceback, no
                 output, no exit within CALL_TIMEOUT) and the router answered no error.
Around each service: its registration answers 201, a plain SOAP call (by the path and by the
body's namespace) is delivered before the DELETE, the DELETE answers 200 or 204 with the
registration, and after it the router refuses both calls as contract_not_found (a call still
delivered when DEADLINE runs out fails the row).

Usage: run.py --bin PATH/TO/switchboard --python PATH/TO/venv/python [--out docs/interop.md]
Exit status 1 if any cell or step fails. The pure checks have their own tests:
  python3 -m unittest discover -s scripts/interop -p 'test_*.py'
"""

import argparse
import collections
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
# How long a state the cluster must reach (a leader, a registration routable or gone) may take.
DEADLINE = 30.0
# How long one client program may run.
CALL_TIMEOUT = 60.0
# Every client calls Add(2, 3).
A, B, SUM = 2, 3, "5"
# The exit status of a client program that got a SOAP fault (or an HTTP error) as its answer.
FAULT_EXIT = 3
# What the router answers a message whose contract is no longer registered: the probes (an
# empty SOAPAction, the body's namespace registered no more) get contract_not_found; the
# SOAP::Lite client's "NAMESPACE#Add" holds no operation segment to drop, so with nothing
# registered in the body's namespace either it gets invalid_action (docs/data-plane.md, Errors).
GONE_CODE = "contract_not_found"
REGISTERED_GONE_CODE = "invalid_action"

SERVICES = ("spyne (Python)", "PHP SoapServer", "SOAP::Lite (Perl)")
ZEEP_WSDL = "zeep, WSDL through the router"
ZEEP_ROOT = "zeep, calling the router's root"
PHP_WSDL = "PHP SoapClient, WSDL through the router"
PHP_ROOT = "PHP SoapClient, calling the router's root"
PERL = "SOAP::Lite (Perl), no WSDL"
CLIENTS = (ZEEP_WSDL, ZEEP_ROOT, PHP_WSDL, PHP_ROOT, PERL)

# The rule that must route each request of each cell, as the follower counts it. No service's
# SOAPAction names a contract (spyne: "Add"; PHP: ""; SOAP::Lite: "NAMESPACE#Add"; the SOAP::Lite
# client sends its own "NAMESPACE#Add"): none holds a "/" to drop an operation from. So
#   - the GET of the WSDL is routed by the path /calc that the registration binds;
#   - a client that calls the address of the WSDL it fetched through the router calls /calc:
#     the path again (the router rewrote the WSDL's address to itself);
#   - a client told to call the router's root (/, bound by nothing) is routed by the namespace
#     of the body's first element, in which exactly one contract is registered.
# A soapaction, ws-addressing or body-operation rule in any cell would be a routing change.
BY_PATH = {"GET ?wsdl": "path", "Add at /calc": "path"}
BY_ROOT = {"GET ?wsdl": "path", "Add at /": "body-namespace"}
NO_WSDL = {"Add at /": "body-namespace"}
EXPECTED_RULES = {
    (ZEEP_WSDL, "spyne (Python)"): BY_PATH,
    (ZEEP_WSDL, "PHP SoapServer"): BY_PATH,
    (ZEEP_WSDL, "SOAP::Lite (Perl)"): BY_PATH,
    (ZEEP_ROOT, "spyne (Python)"): BY_ROOT,
    (ZEEP_ROOT, "PHP SoapServer"): BY_ROOT,
    (ZEEP_ROOT, "SOAP::Lite (Perl)"): BY_ROOT,
    (PHP_WSDL, "spyne (Python)"): BY_PATH,
    (PHP_WSDL, "PHP SoapServer"): BY_PATH,
    (PHP_WSDL, "SOAP::Lite (Perl)"): BY_PATH,
    (PHP_ROOT, "spyne (Python)"): BY_ROOT,
    (PHP_ROOT, "PHP SoapServer"): BY_ROOT,
    (PHP_ROOT, "SOAP::Lite (Perl)"): BY_ROOT,
    (PERL, "spyne (Python)"): NO_WSDL,
    (PERL, "PHP SoapServer"): NO_WSDL,
    (PERL, "SOAP::Lite (Perl)"): NO_WSDL,
}
# The registration service's section calls its endpoint with the SOAP::Lite client.
REGISTERED_RULES = NO_WSDL

PASS = "pass"
WRONG_RULE = "wrong rule"
WRONG_ANSWER = "wrong answer"
UNROUTED = "unrouted"
SERVICE_FAULT = "service fault"
CRASHED = "client crashed"

Verdict = collections.namedtuple("Verdict", "kind detail")


# ---- pure checks (scripts/interop/test_run.py) ----


def read_metrics(text):
    """The data plane's counters in a node's /metrics text."""
    counters = {"decisions": {}, "errors": {}, "routed": 0}
    for m in re.finditer(r'^switchboard_route_decisions_total\{rule="([^"]+)"\} (\d+)$', text, re.M):
        counters["decisions"][m.group(1)] = int(m.group(2))
    for m in re.finditer(r'^switchboard_route_errors_total\{code="([^"]+)"\} (\d+)$', text, re.M):
        counters["errors"][m.group(1)] = int(m.group(2))
    m = re.search(r"^switchboard_routed_requests_total (\d+)$", text, re.M)
    if not counters["decisions"] or not counters["errors"] or not m:
        raise ValueError("the metrics hold no route decision, route error or routed request counter")
    counters["routed"] = int(m.group(1))
    return counters


def counted(before, after):
    """What the node counted between two readings: the rules and codes that rose, by how much."""

    def rose(key):
        return {k: n - before[key].get(k, 0) for k, n in after[key].items() if n > before[key].get(k, 0)}

    return {"decisions": rose("decisions"), "errors": rose("errors"), "routed": after["routed"] - before["routed"]}


def describe(rules):
    """`{rule: n}` as `path ×2, body-namespace`."""
    return ", ".join(f"{rule} ×{n}" if n > 1 else rule for rule, n in sorted(rules.items())) or "none"


def last_line(text):
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def cause(stderr):
    """The line of a client's error output that says why it died: PHP's "Fatal error" line
    (its stack trace follows it), else the last line (Python's exception, Perl's die)."""
    for line in (stderr or "").splitlines():
        if "Fatal error:" in line:
            return line.strip()[:200]
    return last_line(stderr)[:200]


def judge_call(returncode, stdout, stderr, seen, expected):
    """One client run: its exit status (None: killed at CALL_TIMEOUT), its output, what the
    follower counted meanwhile (`counted`) and the rules the cell expects ({request: rule})."""
    said = last_line(stdout)
    if seen["errors"]:
        client = f"; the client: {said or cause(stderr)}" if (said or stderr) else ""
        return Verdict(UNROUTED, f"the router answered {describe(seen['errors'])}{client}")
    if returncode is None:
        return Verdict(CRASHED, f"no exit within {CALL_TIMEOUT:.0f} s")
    if returncode == 0:
        if said == SUM:
            want = collections.Counter(expected.values())
            if collections.Counter(seen["decisions"]) == want:
                return Verdict(PASS, "")
            return Verdict(WRONG_RULE, f"routed by {describe(seen['decisions'])}, expected {describe(want)}")
        if re.fullmatch(r"-?\d+", said):
            return Verdict(WRONG_ANSWER, f"answered {said}, expected {SUM}")
        return Verdict(CRASHED, f"exit 0 without a sum: {said or 'no output'}")
    if returncode == FAULT_EXIT:
        return Verdict(SERVICE_FAULT, said)
    why = cause(stderr) or said or "no output"
    if "Traceback (most recent call last)" in (stderr or ""):
        why = "traceback: " + why
    return Verdict(CRASHED, f"exit {returncode}: {why}")


ADD_RESULT = re.compile(r"<(?:[\w.-]+:)?AddResult\b[^>]*>\s*" + SUM + r"\s*<")


def probe_answer(status, body, headers):
    """A plain SOAP Add call's answer: ("delivered", ""), ("refused", the router's error code) or
    ("other", what came back)."""
    code = headers.get("x-switchboard-error")
    if code:
        return ("refused", code)
    if status == 200 and ADD_RESULT.search(body):
        return ("delivered", "")
    return ("other", f"{status or 'no answer'} {' '.join(body.split())[:100]}")


def judge_removed(answers, waited):
    """Whether every probe answer after a removal shows the contract gone: a Verdict."""
    if answers and all(answer == ("refused", GONE_CODE) for answer in answers.values()):
        return Verdict(PASS, "")
    still = [probe for probe, (kind, _) in answers.items() if kind == "delivered"]
    if still:
        return Verdict("still delivered", f"{', '.join(still)} still delivered {waited:.0f} s after the removal")
    wrong = "; ".join(f"{probe}: {kind} {detail}" for probe, (kind, detail) in answers.items())
    return Verdict("not refused as gone", f"expected {GONE_CODE}; {wrong}")


def judge_delete(status, body, registration_id):
    """`DELETE /v1/registrations/{id}`: 200 with the registration removed, or 204."""
    if status == 204:
        return Verdict(PASS, "204")
    if status == 200:
        try:
            answered = json.loads(body).get("id")
        except (ValueError, AttributeError):
            answered = None
        if answered == registration_id:
            return Verdict(PASS, "200")
        return Verdict("refused", f"200 without the registration: {body.strip()[:100]}")
    return Verdict("refused", f"{status or 'no answer'} {body.strip()[:100]}")


def missing_expectations(clients, services, expected):
    """Cells of the matrix without an expected rule, and expectations for no cell."""
    cells = {(client, service) for client in clients for service in services}
    return sorted(cells - set(expected)), sorted(set(expected) - cells)


# ---- the run ----


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=5.0):
    """(status, body, headers in lower case); status 0 when nothing answered."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace"), lowered(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace"), lowered(err.headers)
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err), {}


def lowered(headers):
    return {k.lower(): v for k, v in headers.items()}


def eventually(what, check, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def until(check, done, deadline=DEADLINE, pause=0.1):
    """Runs check() until done(result) or the deadline; the last result and the time it took."""
    began = time.monotonic()
    while True:
        result = check()
        waited = time.monotonic() - began
        if done(result) or waited >= deadline:
            return result, waited
        time.sleep(pause)


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
            status, body, _ = http("GET", node["api"] + "/v1/cluster")
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

    def metrics(self, node):
        status, text, _ = http("GET", self.nodes[node]["api"] + "/metrics")
        if status != 200:
            raise RuntimeError(f"metrics: {status}")
        return read_metrics(text)


def run_client(cluster, via, argv, expected, cwd=HERE):
    """Runs one client program and judges it against the follower's counters."""
    before = cluster.metrics(via)
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT, cwd=cwd)
        returncode, stdout, stderr = run.returncode, run.stdout, run.stderr
    except subprocess.TimeoutExpired as err:
        returncode, stdout, stderr = None, err.stdout or "", err.stderr or ""
        stdout = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    seen = counted(before, cluster.metrics(via))
    return judge_call(returncode, stdout, stderr, seen, expected), seen


def envelope(namespace):
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        f'<m:Add xmlns:m="{namespace}"><a>{A}</a><b>{B}</b></m:Add>'
        "</soap:Body></soap:Envelope>"
    ).encode()


def probes(data, namespace):
    """A plain SOAP 1.1 Add call with an empty SOAPAction, to the bound path and to the root."""
    headers = {"content-type": "text/xml; charset=utf-8", "soapaction": '""'}
    return {
        "POST /calc": lambda: probe_answer(*http("POST", f"{data}/calc", envelope(namespace), headers)),
        "POST /": lambda: probe_answer(*http("POST", f"{data}/", envelope(namespace), headers)),
    }


def ask(calls):
    return {name: call() for name, call in calls.items()}


def mark(passed):
    return "PASS" if passed else "FAIL"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--python", required=True, help="the Python that has zeep and spyne")
    parser.add_argument("--out", help="write the matrix here (Markdown)")
    args = parser.parse_args()
    args.python = os.path.abspath(args.python)

    unexpected, stray = missing_expectations(CLIENTS, SERVICES, EXPECTED_RULES)
    if unexpected or stray:
        print(f"FAIL expected rules: no expectation for {unexpected}; expectations for no cell: {stray}")
        return 1

    began = time.monotonic()
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
        ab = [str(A), str(B)]
        clients = {
            ZEEP_WSDL: lambda ns: [args.python, os.path.join(HERE, "zeep_client.py"), f"{data}/calc?wsdl", *ab],
            ZEEP_ROOT: lambda ns: [args.python, os.path.join(HERE, "zeep_client.py"), f"{data}/calc?wsdl", *ab, f"{data}/"],
            PHP_WSDL: lambda ns: ["php", os.path.join(HERE, "php_client.php"), f"{data}/calc?wsdl", *ab],
            PHP_ROOT: lambda ns: ["php", os.path.join(HERE, "php_client.php"), f"{data}/calc?wsdl", *ab, f"{data}/"],
            PERL: lambda ns: ["perl", os.path.join(HERE, "perl_client.pl"), f"{data}/", ns, *ab],
        }
        assert tuple(services) == SERVICES and tuple(clients) == CLIENTS
        matrix, lifecycle = {}, {}
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
            rows = lifecycle[service] = {}
            status, body, _ = http("POST", api + "/v1/registrations", json.dumps(registration).encode(), {"content-type": "application/json"})
            rows["register"] = Verdict(PASS, "") if status == 201 else Verdict("refused", f"{status} {body.strip()[:100]}")
            registered = json.loads(body) if status in (200, 201) else {}
            calls = probes(data, namespace)
            answers, _ = until(lambda: ask(calls), lambda a: all(kind == "delivered" for kind, _ in a.values()))
            undelivered = {probe: a for probe, a in answers.items() if a[0] != "delivered"}
            rows["routable"] = Verdict(PASS, "") if not undelivered else Verdict("not delivered", "; ".join(f"{p}: {k} {d}" for p, (k, d) in undelivered.items()))
            for client, argv in clients.items():
                verdict, seen = run_client(cluster, via, argv(namespace), EXPECTED_RULES[(client, service)])
                matrix[(client, service)] = (verdict, seen["decisions"])
                said = describe(seen["decisions"]) if verdict.kind == PASS else verdict.detail
                print(f"{mark(verdict.kind == PASS)} {client} -> {service}: {verdict.kind}: {said}", flush=True)

            status, body, _ = http("DELETE", f"{api}/v1/registrations/{registered.get('id', 'unregistered')}")
            rows["delete"] = judge_delete(status, body, registered.get("id"))
            if rows["delete"].kind != PASS:
                # So that the next service can bind /calc: removed by its three fields instead
                # (the row has failed already).
                fields = {k: registration[k] for k in ("address", "contract_name", "contract_namespace")}
                status, body, _ = http("POST", api + "/v1/registrations/unregister", json.dumps(fields).encode(), {"content-type": "application/json"})
                rows["delete"] = Verdict(rows["delete"].kind, f"{rows['delete'].detail}; removed by POST /v1/registrations/unregister instead: {status}")
            answers, waited = until(lambda: ask(calls), lambda a: judge_removed(a, 0).kind == PASS)
            rows["gone"] = judge_removed(answers, waited)
            processes.stop(process)
            for row, verdict in rows.items():
                print(f"{mark(verdict.kind == PASS)} {service}: {row}: {verdict.kind} {verdict.detail}".rstrip(), flush=True)
            if rows["gone"].kind == PASS:
                print(f"     {service}: refused as gone {waited:.2f} s after the removal", flush=True)
        failed |= any(verdict.kind != PASS for verdict, _ in matrix.values())
        failed |= any(v.kind != PASS for rows in lifecycle.values() for v in rows.values())

        steps = registration_service(processes, cluster, via, args, services)
        for what, verdict in steps:
            failed |= verdict.kind != PASS
            print(f"{mark(verdict.kind == PASS)} {what}: {verdict.kind} {verdict.detail}".rstrip(), flush=True)

        if args.out:
            write_report(args, services, clients, matrix, lifecycle, steps)
        print(f"matrix ran in {time.monotonic() - began:.1f} s", flush=True)
    finally:
        processes.stop_all()
        if failed:
            print(f"logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


def registration_service(processes, cluster, via, args, services):
    """A zeep client generated from the registration WSDL registers an endpoint, which is
    routable; it unregisters it, which is refused from then on."""
    data, api = cluster.nodes[via]["data"], cluster.nodes[via]["api"]
    port = free_port()
    namespace = "urn:interop:registered"
    process = processes.start("registered", services["PHP SoapServer"](port, namespace), env=dict(os.environ, INTEROP_NS=namespace), cwd=HERE)
    eventually("the registered service listening", lambda: http("GET", f"http://127.0.0.1:{port}/calc?wsdl")[0] == 200)
    registrar = [args.python, os.path.join(HERE, "zeep_registrar.py"), f"{api}/v1/soap/registration?wsdl"]
    address = f"http://127.0.0.1:{port}/calc"
    call = ["perl", os.path.join(HERE, "perl_client.pl"), f"{data}/", namespace, str(A), str(B)]
    steps = []

    def registrar_step(what, operation):
        run = subprocess.run(registrar + [operation, address, "ICalculator", namespace], capture_output=True, text=True, timeout=CALL_TIMEOUT)
        ok = run.returncode == 0 and last_line(run.stdout) == "ok"
        steps.append((what, Verdict(PASS, "") if ok else Verdict("refused", f"exit {run.returncode}: {last_line(run.stdout) or last_line(run.stderr)}")))

    registrar_step("Register through a zeep client generated from the registration WSDL", "register")
    (verdict, _), _ = until(lambda: run_client(cluster, via, call, REGISTERED_RULES), lambda r: r[0].kind == PASS, pause=0)
    steps.append(("The registered endpoint is routable (SOAP::Lite call through the follower, by body-namespace)", verdict))
    registrar_step("Unregister through the same client", "unregister")

    def refused_as_gone(result):
        verdict, seen = result
        return verdict.kind == UNROUTED and seen["errors"] == {REGISTERED_GONE_CODE: 1} and not seen["decisions"]

    result, waited = until(lambda: run_client(cluster, via, call, REGISTERED_RULES), refused_as_gone, pause=0)
    verdict = result[0]
    if refused_as_gone(result):
        verdict = Verdict(PASS, "")
        print(f"     the unregistered endpoint refused as gone {waited:.2f} s after Unregister answered", flush=True)
    elif verdict.kind in (PASS, WRONG_RULE, WRONG_ANSWER, SERVICE_FAULT):
        how = "the sum came back" if verdict.kind == PASS else f"{verdict.kind}: {verdict.detail}"
        verdict = Verdict("still delivered", f"{waited:.0f} s after Unregister answered ({how})")
    else:
        verdict = Verdict(verdict.kind, f"expected the router to answer {REGISTERED_GONE_CODE}: {verdict.detail}")
    steps.append((f"The endpoint is no longer routable (the router answers {REGISTERED_GONE_CODE})", verdict))
    processes.stop(process)
    return steps


def write_report(args, services, clients, matrix, lifecycle, steps):
    stacks = [
        ("zeep", version([args.python, "-c", "import zeep; print(zeep.__version__)"])),
        ("spyne", version([args.python, "-c", "import spyne; print(spyne.__version__)"])),
        ("PHP ext/soap", version(["php", "-r", "echo PHP_VERSION;"])),
        ("SOAP::Lite", version(["perl", "-MSOAP::Lite", "-e", "print $SOAP::Lite::VERSION"])),
    ]

    def verdict_cell(verdict, text):
        cell = ("pass" if verdict.kind == PASS else f"**{verdict.kind}**") + (f": {text}" if text else "")
        if verdict.detail and verdict.kind != PASS:
            cell += f" ({verdict.detail})"
        return cell.replace("|", "/")

    lines = [
        "# SOAP interop matrix",
        "",
        "Written by `scripts/interop/run.py` (run by the test command). Every client calls every",
        "service through a follower of a three-node cluster on loopback, with its stack's default",
        "settings. Each service is registered in its own namespace with `route.path` `/calc`, one at",
        "a time.",
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
        "A cell passes when the client printed the sum, the follower answered none of its requests",
        "with an error, and the rules the follower counted while it ran",
        "(`switchboard_route_decisions_total`) are exactly the ones expected for the cell, one per",
        "request; the cell names them. Otherwise it says what went wrong: **wrong rule** (the sum",
        "came back through other rules), **wrong answer**, **unrouted** (the router answered an",
        "error: `switchboard_route_errors_total` rose, whatever the client made of it), **service",
        "fault** (the client reported a fault the router did not answer), or **client crashed** (the",
        "client died for another reason: an exit status, a traceback, no output, no exit in time).",
        "",
        "The last four rows follow each service's registration: `POST /v1/registrations` answers",
        "`201`; a plain SOAP 1.1 call (empty SOAPAction) is delivered both at `/calc` (by the path)",
        "and at `/` (by the body's namespace); `DELETE /v1/registrations/{id}` answers `200` with the",
        "registration (or `204`); from then on the router refuses both calls with",
        f"`{GONE_CODE}`, within {DEADLINE:.0f} s (**still delivered** otherwise).",
        "",
        "Stacks: " + ", ".join(f"{name} {v}" for name, v in stacks) + ".",
        "",
        "| client \\ service | " + " | ".join(services) + " |",
        "|---|" + "---|" * len(services),
    ]
    for client in clients:
        cells = []
        for service in services:
            verdict, rules = matrix[(client, service)]
            expected = EXPECTED_RULES[(client, service)]
            if verdict.kind == PASS:
                text = ", ".join(f"{request} by {rule}" for request, rule in expected.items())
            elif verdict.kind == WRONG_RULE:
                text = ""  # the detail names the rules counted and expected
            else:
                text = f"routed by {describe(rules)}"
            cells.append(verdict_cell(verdict, text))
        lines.append(f"| {client} | " + " | ".join(cells) + " |")
    rows = [
        ("registered (`POST /v1/registrations`)", "register", "201"),
        ("a plain SOAP call delivered (`POST /calc`, `POST /`)", "routable", "delivered"),
        ("`DELETE /v1/registrations/{id}`", "delete", None),
        ("the same calls after the DELETE", "gone", f"refused, `{GONE_CODE}`"),
    ]
    for what, row, text in rows:
        verdicts = [lifecycle[s][row] for s in services]
        cells = [verdict_cell(v, (text or v.detail) if v.kind == PASS else "") for v in verdicts]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The registration service's WSDL",
        "",
        "A zeep client generated from `GET /v1/soap/registration?wsdl` registers a PHP service's",
        "address (its answer: no fault), which the SOAP::Lite client then reaches through the",
        "follower (routed by the body's namespace), and unregisters it; from then on the router",
        f"refuses the same call with `{REGISTERED_GONE_CODE}` (its `NAMESPACE#Add` action holds no",
        f"operation to drop, and nothing is registered in the body's namespace), within {DEADLINE:.0f} s.",
        "",
    ]
    lines += [f"- {'pass' if v.kind == PASS else '**' + v.kind + '**'}: {what}" + (f" ({v.detail})" if v.kind != PASS and v.detail else "") for what, v in steps]
    lines.append("")
    with open(args.out, "w") as out:
        out.write("\n".join(lines))


def version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
