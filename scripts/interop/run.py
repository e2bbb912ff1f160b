#!/usr/bin/env python3
"""The SOAP interop matrix: real SOAP stacks, as client and as service, through a follower of a
three-node Switchboard cluster on loopback.

Services, one registered at a time: spyne (Python), PHP's ext/soap SoapServer and SOAP::Lite
(Perl), each registered with POST /v1/registrations and bound to the path /calc; then two WCF
services (Mono's System.ServiceModel ServiceHost, compiled with mcs at the start of the run), one
on BasicHttpBinding (SOAP 1.1, no addressing) and one on a custom binding (SOAP 1.2 with
WS-Addressing 1.0 over HTTP), each as WCF_INSTANCES instances that pick a free port, register
their own address (http://127.0.0.1:PORT/Services/CalculatorService.svc) through the router's
SOAP registration endpoint with a WCF ChannelFactory<IRegistrationService>, and unregister on
close. Clients, each with its stack's default settings:
  zeep (Python) and PHP SoapClient generated from a WSDL (fetched through the router,
  GET /calc?wsdl, whose address the router sets to itself: routed by the path; for a WCF service,
  the WSDL one instance publishes, as nothing binds a path to route a GET by), calling the WSDL's
  path on the router or the router's root; SOAP::Lite without a WSDL (its "NAMESPACE#Add"
  action, routed by the body's namespace); and two WCF clients (a ChannelFactory of the contract,
  one per binding) configured with the router's URL at a path of their own,
  /Services/CalculatorService.svc. A cell that cannot work whatever the router does (the two
  sides share no SOAP version or action convention) is not run; EXPECTED_RULES says why.
Then a zeep client generated from GET /v1/soap/registration?wsdl registers an endpoint,
which is routable, and unregisters it, which is not.

What each cell asserts, from the follower's counters read before and after the client ran
(switchboard_route_decisions_total by rule, switchboard_route_errors_total by code) and from
the client program's exit status and output:
  pass           the client printed the sum, the router answered no error, and the rules it
                 counted are exactly EXPECTED_RULES for the cell (one per request); for a WCF
                 service, also: every instance answered the WCF client's Instance calls (the
                 contract's round robin), and every call reached an instance at its registered
                 address, with a WS-Addressing To equal to it;
  wrong rule     the sum came back, but through other rules than the cell expects;
  wrong answer   the client printed another number;
  unrouted       the router answered an error (a fault or an error status) to a request of
                 the client, whatever the client made of it;
  service fault  the client reported a fault (exit status FAULT_EXIT) that the router did not
                 answer: it came from the service;
  client crashed the client died for another reason (another exit status, a traceback, no
                 output, no exit within CALL_TIMEOUT) and the router answered no error;
  instance missed, wrong address   (WCF services) see above.
Around each service: it is registered (201; WCF: every instance's Register answered), routable
(a plain SOAP call delivered by the path and by the body's namespace; WCF: the follower lists
every instance), removed (DELETE answers 200 or 204 with the registration; WCF: every instance
unregistered on close and exited; the row names any instance whose watchdog had to end Mono's
own shutdown after the Unregister was answered) and then refused: contract_not_found (WCF: the WCF client
gets a FaultException carrying that code) before DEADLINE runs out.

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
import urllib.parse
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

# The WCF services: WCF_INSTANCES instances each, at this path of their own port.
WCF_BASIC_SERVICE = "WCF BasicHttpBinding"
WCF_WSA_SERVICE = "WCF SOAP 1.2 + WS-Addressing"
WCF_BINDINGS = {WCF_BASIC_SERVICE: "basic", WCF_WSA_SERVICE: "soap12-wsa"}
WCF_PATH = "/Services/CalculatorService.svc"
WCF_INSTANCES = 3
# A WCF client of a WCF service first calls Instance this many times: round robin over them
# reaches every instance (twice).
WCF_INSTANCE_CALLS = 2 * WCF_INSTANCES
# The C# programs, compiled once per run; the assemblies they use.
WCF_SOURCES = {"wcf_service": ("wcf_common.cs", "wcf_service.cs"), "wcf_client": ("wcf_common.cs", "wcf_client.cs")}
WCF_REFERENCES = ("System.ServiceModel", "System.Runtime.Serialization", "System.Web.Services", "System.Xml")
# The namespace of the router's SOAP fault subcodes (SOAP 1.2).
ROUTER_ERROR_NS = "urn:switchboard:error"

SERVICES = ("spyne (Python)", "PHP SoapServer", "SOAP::Lite (Perl)", WCF_BASIC_SERVICE, WCF_WSA_SERVICE)
ZEEP_WSDL = "zeep, at the WSDL's path"
ZEEP_ROOT = "zeep, at the router's root"
PHP_WSDL = "PHP SoapClient, at the WSDL's path"
PHP_ROOT = "PHP SoapClient, at the router's root"
PERL = "SOAP::Lite (Perl), no WSDL"
WCF_BASIC = "WCF ChannelFactory, BasicHttpBinding"
WCF_WSA = "WCF ChannelFactory, SOAP 1.2 + WS-Addressing"
CLIENTS = (ZEEP_WSDL, ZEEP_ROOT, PHP_WSDL, PHP_ROOT, PERL, WCF_BASIC, WCF_WSA)

# A cell that is not run: whatever the router did, the two sides could not talk.
NotRun = collections.namedtuple("NotRun", "reason")

# The rule that must route each request of each cell, as the follower counts it ({request: rule},
# or {request: (rule, times)} for a request made several times). No SOAPAction of the first three
# services names a contract (spyne: "Add"; PHP: ""; SOAP::Lite: "NAMESPACE#Add"; the SOAP::Lite
# client sends its own "NAMESPACE#Add"): none holds a "/" to drop an operation from. So
#   - the GET of the WSDL is routed by the path /calc that the registration binds;
#   - a client that calls the address of the WSDL it fetched through the router calls /calc:
#     the path again (the router rewrote the WSDL's address to itself);
#   - a client told to call the router's root (/, bound by nothing) is routed by the namespace
#     of the body's first element, in which exactly one contract is registered.
# WCF names the contract in its actions ({namespace}/ICalculator/{operation}), so every call of a
# WCF client, and every call to a WCF service, is routed by it: by the SOAPAction header (SOAP
# 1.1; zeep sends one for SOAP 1.2 too) or, for Mono's SOAP 1.2 client (no action parameter in
# its content type), by the WS-Addressing Action block. The WSDL of a WCF service comes from the
# instance, not through the router: its GET is not routed.
# A rule in any cell other than the expected one would be a routing change.
BY_PATH = {"GET ?wsdl": "path", "Add at /calc": "path"}
BY_ROOT = {"GET ?wsdl": "path", "Add at /": "body-namespace"}
NO_WSDL = {"Add at /": "body-namespace"}
WCF_AT_PATH = {f"Add at {WCF_PATH}": "soapaction"}
ACTION_AT_ROOT = {"Add at /": "soapaction"}
WCF_SPREAD = {f"Instance ×{WCF_INSTANCE_CALLS} at {WCF_PATH}": ("soapaction", WCF_INSTANCE_CALLS), f"Add at {WCF_PATH}": "soapaction"}
WCF_SPREAD_WSA = {f"Instance ×{WCF_INSTANCE_CALLS} at {WCF_PATH}": ("ws-addressing", WCF_INSTANCE_CALLS), f"Add at {WCF_PATH}": "ws-addressing"}
SOAP11_ONLY = NotRun("the service speaks SOAP 1.1 only; this client SOAP 1.2 with WS-Addressing")
WSA_ONLY = NotRun("the binding takes SOAP 1.2 with WS-Addressing only; this client speaks SOAP 1.1 without it")
EXPECTED_RULES = {
    (ZEEP_WSDL, "spyne (Python)"): BY_PATH,
    (ZEEP_WSDL, "PHP SoapServer"): BY_PATH,
    (ZEEP_WSDL, "SOAP::Lite (Perl)"): BY_PATH,
    (ZEEP_WSDL, WCF_BASIC_SERVICE): WCF_AT_PATH,
    (ZEEP_WSDL, WCF_WSA_SERVICE): WCF_AT_PATH,
    (ZEEP_ROOT, "spyne (Python)"): BY_ROOT,
    (ZEEP_ROOT, "PHP SoapServer"): BY_ROOT,
    (ZEEP_ROOT, "SOAP::Lite (Perl)"): BY_ROOT,
    (ZEEP_ROOT, WCF_BASIC_SERVICE): ACTION_AT_ROOT,
    (ZEEP_ROOT, WCF_WSA_SERVICE): ACTION_AT_ROOT,
    (PHP_WSDL, "spyne (Python)"): BY_PATH,
    (PHP_WSDL, "PHP SoapServer"): BY_PATH,
    (PHP_WSDL, "SOAP::Lite (Perl)"): BY_PATH,
    (PHP_WSDL, WCF_BASIC_SERVICE): WCF_AT_PATH,
    (PHP_WSDL, WCF_WSA_SERVICE): NotRun("PHP's SoapClient sends SOAP 1.1 unless told soap_version, and no WS-Addressing"),
    (PHP_ROOT, "spyne (Python)"): BY_ROOT,
    (PHP_ROOT, "PHP SoapServer"): BY_ROOT,
    (PHP_ROOT, "SOAP::Lite (Perl)"): BY_ROOT,
    (PHP_ROOT, WCF_BASIC_SERVICE): ACTION_AT_ROOT,
    (PHP_ROOT, WCF_WSA_SERVICE): NotRun("PHP's SoapClient sends SOAP 1.1 unless told soap_version, and no WS-Addressing"),
    (PERL, "spyne (Python)"): NO_WSDL,
    (PERL, "PHP SoapServer"): NO_WSDL,
    (PERL, "SOAP::Lite (Perl)"): NO_WSDL,
    (PERL, WCF_BASIC_SERVICE): NotRun("WCF dispatches by the action, and `NAMESPACE#Add` names no operation of the contract"),
    (PERL, WCF_WSA_SERVICE): WSA_ONLY,
    (WCF_BASIC, "spyne (Python)"): WCF_AT_PATH,
    (WCF_BASIC, "PHP SoapServer"): WCF_AT_PATH,
    (WCF_BASIC, "SOAP::Lite (Perl)"): NotRun("SOAP::Lite's server refuses a SOAPAction other than `NAMESPACE#Add`"),
    (WCF_BASIC, WCF_BASIC_SERVICE): WCF_SPREAD,
    (WCF_BASIC, WCF_WSA_SERVICE): WSA_ONLY,
    (WCF_WSA, "spyne (Python)"): SOAP11_ONLY,
    (WCF_WSA, "PHP SoapServer"): SOAP11_ONLY,
    (WCF_WSA, "SOAP::Lite (Perl)"): SOAP11_ONLY,
    (WCF_WSA, WCF_BASIC_SERVICE): SOAP11_ONLY,
    (WCF_WSA, WCF_WSA_SERVICE): WCF_SPREAD_WSA,
}
# The registration service's section calls its endpoint with the SOAP::Lite client.
REGISTERED_RULES = NO_WSDL

PASS = "pass"
WRONG_RULE = "wrong rule"
WRONG_ANSWER = "wrong answer"
UNROUTED = "unrouted"
SERVICE_FAULT = "service fault"
CRASHED = "client crashed"
NOT_RUN = "not run"
INSTANCE_MISSED = "instance missed"
WRONG_ADDRESS = "wrong address"

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
    (its stack trace follows it), Mono's exception after "Unhandled Exception:" (its stack
    trace follows it), else the last line (Python's exception, Perl's die)."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for n, line in enumerate(lines):
        if "Fatal error:" in line:
            return line[:200]
        if line == "Unhandled Exception:" and n + 1 < len(lines):
            return lines[n + 1][:200]
    return last_line(stderr)[:200]


def wanted(expected):
    """How many requests each rule must route: {request: rule or (rule, times)} as {rule: n}."""
    counts = collections.Counter()
    for rule in expected.values():
        rule, times = rule if isinstance(rule, tuple) else (rule, 1)
        counts[rule] += times
    return counts


def explain(expected):
    """The expected rules as the matrix names them: `Add at /calc by path`."""
    return ", ".join(f"{request} by {rule[0] if isinstance(rule, tuple) else rule}" for request, rule in expected.items())


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
            want = wanted(expected)
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


INSTANCE_LINE = re.compile(r"^instance: (\S+)$", re.M)


def judge_spread(stdout, instances):
    """The WCF client's Instance calls (its "instance: ID" lines): every instance answered, and
    only those. PASS names how many calls each got."""
    answered = collections.Counter(INSTANCE_LINE.findall(stdout or ""))
    strangers = sorted(set(answered) - set(instances))
    if strangers:
        return Verdict(INSTANCE_MISSED, f"answered by {', '.join(strangers)}, none of {', '.join(instances)}")
    spread = ", ".join(f"{instance} ×{answered[instance]}" for instance in instances)
    missed = [instance for instance in instances if not answered[instance]]
    if missed:
        return Verdict(INSTANCE_MISSED, f"{', '.join(missed)} never answered ({spread})")
    return Verdict(PASS, spread)


CALL_LINE = re.compile(r"^call (\w+) at (\S+) To (\S+)$", re.M)


def judge_arrivals(calls, addresses):
    """Where the WCF service instances were called: `calls` is {instance: the "call OP at URL To
    TO" lines it printed}, `addresses` {instance: its registered address}. Every call must have
    reached the registered address exactly, with a WS-Addressing To (if any) equal to it."""
    wrong = []
    for instance, text in calls.items():
        for operation, url, to in CALL_LINE.findall(text):
            if url != addresses[instance]:
                wrong.append(f"{instance} got {operation} at {url}, registered at {addresses[instance]}")
            elif to not in ("none", addresses[instance]):
                wrong.append(f"{instance} got {operation} with To {to}, registered at {addresses[instance]}")
    if wrong:
        return Verdict(WRONG_ADDRESS, "; ".join(wrong[:2]) + (f" (and {len(wrong) - 2} more)" if len(wrong) > 2 else ""))
    return Verdict(PASS, "")


def judge_closed(returncode, log):
    """A WCF service instance after its standard input closed: "unregistered" when it said so
    and exited 0, else what went wrong (returncode None: still running at the deadline)."""
    unregistered = re.search(r"^unregistered$", log, re.M) is not None
    if returncode == 0 and unregistered:
        return "unregistered"
    if returncode is None:
        return f"{'unregistered, but ' if unregistered else ''}no exit within {DEADLINE:.0f} s"
    return f"exit {returncode}{' after unregistering' if unregistered else ''}: {last_line(log)}"


def watchdog(log):
    """What a WCF service instance's shutdown watchdog said, if it had to end the process (the
    Unregister call had been answered by then; Mono hung in closing its own channel or host)."""
    match = re.search(r"^watchdog: shutdown stuck at (.+?); exiting$", log, re.M)
    return f"stuck at {match.group(1)}" if match else ""


def service_said(logged):
    """What the WCF service instances printed during a cell besides the calls they served (Mono
    logs a request it could not read): `instance: line`, for a failing cell's detail."""
    lines = [f"{instance}: {line.strip()}" for instance, text in logged.items() for line in text.splitlines() if line.strip() and not CALL_LINE.match(line.strip())]
    return ("the service logged " + "; ".join(lines[:2])) if lines else ""


WCF_FAULT = re.compile(r"^fault: FaultException code=(\S+) \[([^\]]*)\](?: subcode=(\S+) \[([^\]]*)\])?")


def router_code(line):
    """The router's error code in a WCF client's fault line ("fault: FaultException code=NAME
    [NS] subcode=NAME [NS] ..."): a SOAP 1.2 Subcode in the router's namespace, or a SOAP 1.1
    faultcode Client.CODE or Server.CODE. None for any other fault or line."""
    match = WCF_FAULT.match(line or "")
    if not match:
        return None
    code, _, subcode, subcode_ns = match.groups()
    if subcode and subcode_ns == ROUTER_ERROR_NS:
        return subcode
    kind, dot, rest = code.partition(".")
    if dot and kind in ("Client", "Server") and rest:
        return rest
    return None


def fault_code(line):
    """The fault code of a WCF client's fault line as the matrix shows it: `Client.x` or
    `Sender/x`."""
    match = WCF_FAULT.match(line or "")
    if not match:
        return ""
    code, _, subcode, _ = match.groups()
    return f"{code}/{subcode}" if subcode else code


def judge_wcf_gone(returncode, stdout, stderr, seen):
    """A WCF client's call after every instance unregistered: the router must have answered
    contract_not_found (its counter) and the client must have got it as a FaultException
    carrying that code."""
    said = last_line(stdout)
    if returncode == 0 and said == SUM:
        return Verdict("still delivered", "the sum came back")
    code = router_code(said)
    if returncode == FAULT_EXIT and code == GONE_CODE and seen["errors"] == {GONE_CODE: 1} and not seen["decisions"]:
        return Verdict(PASS, fault_code(said))
    router = f"; the router answered {describe(seen['errors'])}" if seen["errors"] else "; the router answered no error"
    if code:
        return Verdict("wrong code", f"FaultException {fault_code(said)}, expected {GONE_CODE}{router}")
    if said.startswith("fault: FaultException"):
        return Verdict("no code", f"a FaultException without the router's code: {said[len('fault: '):][:160]}{router}")
    if returncode is None:
        return Verdict("not a FaultException", f"no exit within {CALL_TIMEOUT:.0f} s{router}")
    return Verdict("not a FaultException", f"{said or cause(stderr) or 'no output'}{router}")


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

    def start(self, name, argv, env=None, cwd=None, stdin=None):
        log = open(os.path.join(self.logs, f"{name}.log"), "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, stdin=stdin)
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


def call(cluster, via, argv, cwd=HERE):
    """Runs one client program: its exit status (None: killed at CALL_TIMEOUT), its output, and
    what the follower counted meanwhile."""
    before = cluster.metrics(via)
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT, cwd=cwd)
        returncode, stdout, stderr = run.returncode, run.stdout, run.stderr
    except subprocess.TimeoutExpired as err:
        returncode, stdout, stderr = None, err.stdout or "", err.stderr or ""
        stdout = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    return returncode, stdout, stderr, counted(before, cluster.metrics(via))


def run_client(cluster, via, argv, expected, cwd=HERE):
    """Runs one client program and judges it against the follower's counters."""
    returncode, stdout, stderr, seen = call(cluster, via, argv, cwd)
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


# Where a client finds a service: the contract's namespace, the WSDL it is generated from, the
# path the WSDL's address names, the element form of the parameters (spyne and WCF qualify them;
# the PHP and SOAP::Lite services' WSDL leaves them unqualified), and whether it is a WCF service.
Target = collections.namedtuple("Target", "namespace wsdl path form wcf")
FORMS = {"spyne (Python)": "qualified", "PHP SoapServer": "unqualified", "SOAP::Lite (Perl)": "unqualified"}


def compile_wcf(out):
    """Compiles the C# programs with mcs into `out`: {program: its .exe}."""
    exes = {}
    for program, sources in WCF_SOURCES.items():
        exe = os.path.join(out, f"{program}.exe")
        argv = ["mcs", "-nologo", f"-out:{exe}", *(f"-r:{r}" for r in WCF_REFERENCES), *(os.path.join(HERE, s) for s in sources)]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT)
        if run.returncode != 0:
            raise RuntimeError(f"mcs {program}: {(run.stdout + run.stderr).strip()[:500]}")
        exes[program] = exe
    return exes


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
    failed = True
    try:
        try:
            exes = compile_wcf(base)
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            print(f"FAIL compiling the WCF programs: {err}", flush=True)
            return 1
        print(f"     compiled the WCF programs in {time.monotonic() - began:.1f} s", flush=True)
        cluster = Cluster(processes, os.path.abspath(args.bin), base)
        via = cluster.follower()
        data, api = cluster.nodes[via]["data"], cluster.nodes[via]["api"]

        services = {
            "spyne (Python)": lambda port, ns: [args.python, os.path.join(HERE, "spyne_service.py"), str(port), ns],
            "PHP SoapServer": lambda port, ns: ["php", "-S", f"127.0.0.1:{port}", os.path.join(HERE, "php_service.php")],
            "SOAP::Lite (Perl)": lambda port, ns: ["perl", os.path.join(HERE, "perl_service.pl"), str(port), ns],
        }
        ab = [str(A), str(B)]

        def at_wsdl_path(t):
            # A WCF service's WSDL names the instance: the client is told the router's URL instead.
            return [f"{data}{t.path}"] if t.wcf else []

        def wcf_client(binding, t, spread=True):
            instance_calls = [str(WCF_INSTANCE_CALLS)] if t.wcf and spread else []
            return ["mono", exes["wcf_client"], binding, f"{data}{WCF_PATH}", t.namespace, t.form, *ab, *instance_calls]

        clients = {
            ZEEP_WSDL: lambda t: [args.python, os.path.join(HERE, "zeep_client.py"), t.wsdl, *ab, *at_wsdl_path(t)],
            ZEEP_ROOT: lambda t: [args.python, os.path.join(HERE, "zeep_client.py"), t.wsdl, *ab, f"{data}/"],
            PHP_WSDL: lambda t: ["php", os.path.join(HERE, "php_client.php"), t.wsdl, *ab, *at_wsdl_path(t)],
            PHP_ROOT: lambda t: ["php", os.path.join(HERE, "php_client.php"), t.wsdl, *ab, f"{data}/"],
            PERL: lambda t: ["perl", os.path.join(HERE, "perl_client.pl"), f"{data}/", t.namespace, *ab],
            WCF_BASIC: lambda t: wcf_client("basic", t),
            WCF_WSA: lambda t: wcf_client("soap12-wsa", t),
        }
        assert tuple(services) + tuple(WCF_BINDINGS) == SERVICES and tuple(clients) == CLIENTS
        matrix, lifecycle = {}, {}

        def run_cells(service, target, before=None, check=None):
            """Every client against one service; `check(verdict, stdout, before())` judges a cell
            further."""
            for client, argv in clients.items():
                expected = EXPECTED_RULES[(client, service)]
                if isinstance(expected, NotRun):
                    matrix[(client, service)] = (Verdict(NOT_RUN, expected.reason), {})
                    print(f"     {client} -> {service}: not run: {expected.reason}", flush=True)
                    continue
                snapshot = before() if before else None
                returncode, stdout, stderr, seen = call(cluster, via, argv(target))
                verdict = judge_call(returncode, stdout, stderr, seen, expected)
                if check:
                    verdict = check(verdict, stdout, snapshot)
                matrix[(client, service)] = (verdict, seen["decisions"])
                said = describe(seen["decisions"]) + (f"; {verdict.detail}" if verdict.detail else "") if verdict.kind == PASS else verdict.detail
                print(f"{mark(verdict.kind == PASS)} {client} -> {service}: {verdict.kind}: {said}", flush=True)

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
            rows["register"] = Verdict(PASS, "`201` to `POST /v1/registrations`") if status == 201 else Verdict("refused", f"{status} {body.strip()[:100]}")
            registered = json.loads(body) if status in (200, 201) else {}
            calls = probes(data, namespace)
            answers, _ = until(lambda: ask(calls), lambda a: all(kind == "delivered" for kind, _ in a.values()))
            undelivered = {probe: a for probe, a in answers.items() if a[0] != "delivered"}
            rows["routable"] = Verdict(PASS, "a plain call delivered at `/calc` and `/`") if not undelivered else Verdict("not delivered", "; ".join(f"{p}: {k} {d}" for p, (k, d) in undelivered.items()))
            run_cells(service, Target(namespace, f"{data}/calc?wsdl", "/calc", FORMS[service], False))

            status, body, _ = http("DELETE", f"{api}/v1/registrations/{registered.get('id', 'unregistered')}")
            rows["delete"] = judge_delete(status, body, registered.get("id"))
            if rows["delete"].kind != PASS:
                # So that the next service can bind /calc: removed by its three fields instead
                # (the row has failed already).
                fields = {k: registration[k] for k in ("address", "contract_name", "contract_namespace")}
                status, body, _ = http("POST", api + "/v1/registrations/unregister", json.dumps(fields).encode(), {"content-type": "application/json"})
                rows["delete"] = Verdict(rows["delete"].kind, f"{rows['delete'].detail}; removed by POST /v1/registrations/unregister instead: {status}")
            else:
                rows["delete"] = Verdict(PASS, f"`{rows['delete'].detail}` to `DELETE /v1/registrations/{{id}}`")
            answers, waited = until(lambda: ask(calls), lambda a: judge_removed(a, 0).kind == PASS)
            rows["gone"] = judge_removed(answers, waited)
            if rows["gone"].kind == PASS:
                rows["gone"] = Verdict(PASS, f"both calls refused, `{GONE_CODE}`")
            processes.stop(process)
            for row, verdict in rows.items():
                print(f"{mark(verdict.kind == PASS)} {service}: {row}: {verdict.kind} {verdict.detail}".rstrip(), flush=True)
            if rows["gone"].kind == PASS:
                print(f"     {service}: refused as gone {waited:.2f} s after the removal", flush=True)

        for service, binding in WCF_BINDINGS.items():
            lifecycle[service] = wcf_service(processes, cluster, via, base, exes, service, binding, run_cells, wcf_client)

        failed = any(verdict.kind not in (PASS, NOT_RUN) for verdict, _ in matrix.values())
        failed |= any(v.kind != PASS for rows in lifecycle.values() for v in rows.values())

        steps = registration_service(processes, cluster, via, args, services)
        for what, verdict in steps:
            failed |= verdict.kind != PASS
            print(f"{mark(verdict.kind == PASS)} {what}: {verdict.kind} {verdict.detail}".rstrip(), flush=True)

        if args.out:
            write_report(args, matrix, lifecycle, steps)
        print(f"matrix ran in {time.monotonic() - began:.1f} s", flush=True)
    finally:
        processes.stop_all()
        if failed:
            print(f"logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


LISTENING = re.compile(r"^listening (\S+)$", re.M)
REGISTERED = re.compile(r"^registered$", re.M)


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            return log.read()
    except OSError:
        return ""


def wcf_service(processes, cluster, via, base, exes, service, binding, run_cells, wcf_client):
    """One WCF service's column: WCF_INSTANCES instances start, each registering itself through
    IRegistrationService at another node; every client calls them through the follower; they
    close (unregistering); the WCF client then gets the router's contract_not_found fault."""
    data, api = cluster.nodes[via]["data"], cluster.nodes[via]["api"]
    slug = re.sub(r"[^a-z]+", "-", service.lower()).strip("-")
    namespace = f"urn:interop:{slug}"
    nodes = sorted(cluster.nodes)
    instances = {}
    for n in range(WCF_INSTANCES):
        instance = f"{slug}-{n + 1}"
        registrar = f"{cluster.nodes[nodes[n % len(nodes)]]['api']}/v1/soap/registration"
        argv = ["mono", exes["wcf_service"], binding, namespace, instance, registrar]
        instances[instance] = processes.start(instance, argv, cwd=HERE, stdin=subprocess.PIPE)
    logs = {instance: os.path.join(base, f"{instance}.log") for instance in instances}
    rows = {}

    def started():
        return {i: (read(logs[i]), process.poll()) for i, process in instances.items()}

    def settled(states):
        return all(REGISTERED.search(text) or code is not None for text, code in states.values())

    states, _ = until(started, settled)
    addresses = {i: m.group(1) for i, (text, _) in states.items() for m in [LISTENING.search(text)] if m}
    missing = {i: (last_line(text) or f"exit {code}") for i, (text, code) in states.items() if not REGISTERED.search(text)}
    if missing:
        rows["register"] = Verdict("not registered", "; ".join(f"{i}: {why}" for i, why in missing.items()))
    else:
        rows["register"] = Verdict(PASS, f"{WCF_INSTANCES} instances, each `Register` through `IRegistrationService` at another node")

    policy = {"contract_namespace": namespace, "contract_name": "ICalculator", "policy": "round_robin"}
    status, body, _ = http("PUT", api + "/v1/policies", json.dumps(policy).encode(), {"content-type": "application/json"})
    query = urllib.parse.urlencode({"contract_namespace": namespace, "contract_name": "ICalculator"})

    def listed():
        code, text, _ = http("GET", f"{api}/v1/registrations?{query}")
        return {r.get("address") for r in json.loads(text).get("registrations", [])} if code == 200 else set()

    seen, _ = until(listed, lambda found: found == set(addresses.values()))
    if status != 200:
        rows["routable"] = Verdict("refused", f"PUT /v1/policies: {status} {body.strip()[:100]}")
    elif not addresses or seen != set(addresses.values()):
        rows["routable"] = Verdict("not listed", f"the follower lists {len(seen)} of the {len(addresses)} addresses")
    else:
        rows["routable"] = Verdict(PASS, f"the follower lists all {len(addresses)}, policy `round_robin`")

    def before():
        return {i: len(read(logs[i])) for i in instances}

    def check(verdict, stdout, snapshot):
        logged = {i: read(logs[i])[snapshot[i]:] for i in instances}
        if verdict.kind != PASS:
            said = service_said(logged)
            return Verdict(verdict.kind, f"{verdict.detail}; {said}") if said else verdict
        if INSTANCE_LINE.search(stdout or ""):
            spread = judge_spread(stdout, list(instances))
            if spread.kind != PASS:
                return spread
        else:
            spread = Verdict(PASS, "")
        arrived = judge_arrivals(logged, addresses)
        return arrived if arrived.kind != PASS else spread

    if addresses:
        first = next(iter(addresses.values()))
        run_cells(service, Target(namespace, f"{first}?wsdl", WCF_PATH, "qualified", True), before, check)
    else:
        run_cells(service, Target(namespace, "http://127.0.0.1:9/none?wsdl", WCF_PATH, "qualified", True))

    for process in instances.values():
        if process.poll() is None:
            process.stdin.close()
    exits, _ = until(lambda: {i: p.poll() for i, p in instances.items()}, lambda codes: None not in codes.values())
    closed = {i: judge_closed(code, read(logs[i])) for i, code in exits.items()}
    for process in instances.values():
        if process.poll() is None:
            processes.stop(process)
    failing = {i: why for i, why in closed.items() if why != "unregistered"}
    if failing:
        rows["delete"] = Verdict("not unregistered", "; ".join(f"{i}: {why}" for i, why in failing.items()))
    else:
        stuck = [f"{i} {line}" for i in instances if (line := watchdog(read(logs[i])))]
        note = f" (Mono's own shutdown: {'; '.join(stuck)})" if stuck else ""
        rows["delete"] = Verdict(PASS, f"`Unregister` on close, {len(closed)} of {len(closed)}{note}")

    probe = wcf_client(binding, Target(namespace, "", WCF_PATH, "qualified", True), spread=False)
    result, waited = until(lambda: call(cluster, via, probe), lambda r: judge_wcf_gone(*r).kind == PASS)
    rows["gone"] = judge_wcf_gone(*result)
    if rows["gone"].kind == PASS:
        rows["gone"] = Verdict(PASS, f"`FaultException`, code `{rows['gone'].detail}`")
    for row, verdict in rows.items():
        print(f"{mark(verdict.kind == PASS)} {service}: {row}: {verdict.kind} {verdict.detail}".rstrip(), flush=True)
    if rows["gone"].kind == PASS:
        print(f"     {service}: refused as gone {waited:.2f} s after the instances closed", flush=True)
    return rows


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


def write_report(args, matrix, lifecycle, steps):
    stacks = [
        ("zeep", version([args.python, "-c", "import zeep; print(zeep.__version__)"])),
        ("spyne", version([args.python, "-c", "import spyne; print(spyne.__version__)"])),
        ("PHP ext/soap", version(["php", "-r", "echo PHP_VERSION;"])),
        ("SOAP::Lite", version(["perl", "-MSOAP::Lite", "-e", "print $SOAP::Lite::VERSION"])),
        ("Mono's System.ServiceModel (WCF)", mono_version()),
    ]

    def verdict_cell(verdict, text):
        if verdict.kind == NOT_RUN:
            return f"n/a: {verdict.detail}".replace("|", "/")
        cell = ("pass" if verdict.kind == PASS else f"**{verdict.kind}**") + (f": {text}" if text else "")
        if verdict.detail and verdict.kind != PASS:
            cell += f" ({verdict.detail})"
        return cell.replace("|", "/")

    lines = [
        "# SOAP interop matrix",
        "",
        "Written by `scripts/interop/run.py` (run by the test command). Every client calls every",
        "service through a follower of a three-node cluster on loopback, with its stack's default",
        "settings. Each service is registered in its own namespace, one at a time: the first three",
        "with `POST /v1/registrations` and `route.path` `/calc`, the WCF services by themselves.",
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
        "The WCF cells. Two services run on Mono's `System.ServiceModel` (compiled with `mcs` at the",
        "start of the run): `ServiceHost`s on `BasicHttpBinding` (SOAP 1.1, no addressing) and on a",
        "custom binding (text encoding with SOAP 1.2 and WS-Addressing 1.0, over HTTP), each as",
        f"{WCF_INSTANCES} instances of one contract that pick a free port, serve",
        f"`http://127.0.0.1:PORT{WCF_PATH}`, register that address through the router's",
        "SOAP registration endpoint (`IRegistrationService` at `/v1/soap/registration`, each instance",
        "at another node, with a WCF `ChannelFactory<IRegistrationService>`) and unregister when they",
        "close, as the seed describes. WCF names the contract in its actions",
        "(`{namespace}/ICalculator/{operation}`), so every WCF call is routed by its action: the",
        "`SOAPAction` header, or for Mono's SOAP 1.2 client (no action in its content type) the",
        "WS-Addressing `Action` block. The WCF clients (a `ChannelFactory` of the contract, one per",
        f"binding) are configured with the router at a path of their own, `{WCF_PATH}`; the router",
        "must deliver each message to the registered address exactly, whatever path the client",
        "posted to, and rewrite a WS-Addressing `To` to that address (WCF refuses a message whose",
        "`To` or path is not its own: `DestinationUnreachable`). A WCF client of a WCF service first",
        f"calls `Instance` {WCF_INSTANCE_CALLS} times: under the contract's `round_robin` policy every",
        "instance must answer, and every instance must have been called at its own address (with",
        "its own `To`). zeep and PHP generate their client from the WSDL one instance publishes (a",
        "registration through `IRegistrationService` binds no path, so the router has no rule to",
        "route a `GET ?wsdl` by), told to call the router at the service's path or at its root; zeep",
        "also sends a `SOAPAction` header for SOAP 1.2. (Mono's WSDL export has two defects no client",
        "gets past: the types import the XML Schema namespace from an empty `?xsd=`, and a SOAP 1.2",
        "binding gets SOAP 1.1's binding and address elements; the service corrects both before it",
        "answers a `GET ?wsdl`.) A WCF client of the other services uses the",
        "form of their WSDL (spyne qualifies the parameters, the PHP service's WSDL does not). After",
        "the instances close, the WCF client must get the router's own fault as a `FaultException`",
        "whose code carries `contract_not_found`: SOAP 1.1 `s:Client.contract_not_found`, SOAP 1.2",
        "`env:Sender` with the Subcode `sb:contract_not_found` (`xmlns:sb=\"urn:switchboard:error\"`).",
        "A cell marked n/a is not run: the two sides share no SOAP version or action convention,",
        "whatever the router does.",
        "",
        "A cell passes when the client printed the sum, the follower answered none of its requests",
        "with an error, and the rules the follower counted while it ran",
        "(`switchboard_route_decisions_total`) are exactly the ones expected for the cell, one per",
        "request; the cell names them. Otherwise it says what went wrong: **wrong rule** (the sum",
        "came back through other rules), **wrong answer**, **unrouted** (the router answered an",
        "error: `switchboard_route_errors_total` rose, whatever the client made of it), **service",
        "fault** (the client reported a fault the router did not answer), **client crashed** (the",
        "client died for another reason: an exit status, a traceback, no output, no exit in time),",
        "**instance missed** or **wrong address** (a WCF service, as above).",
        "",
        "The last four rows follow each service's registration: registered (`POST",
        "/v1/registrations` answers `201`; WCF: every instance's `Register` answered); routable (a",
        "plain SOAP 1.1 call with an empty SOAPAction is delivered both at `/calc`, by the path, and",
        "at `/`, by the body's namespace; WCF: the follower lists every instance); removed (`DELETE",
        "/v1/registrations/{id}` answers `200` with the registration, or `204`; WCF: every instance",
        "called `Unregister` on close and exited); and from then on refused with",
        f"`{GONE_CODE}` within {DEADLINE:.0f} s (**still delivered** otherwise).",
        "",
        "Stacks: " + ", ".join(f"{name} {v}" for name, v in stacks) + ".",
        "",
        "| client \\ service | " + " | ".join(SERVICES) + " |",
        "|---|" + "---|" * len(SERVICES),
    ]
    for client in CLIENTS:
        cells = []
        for service in SERVICES:
            verdict, rules = matrix[(client, service)]
            expected = EXPECTED_RULES[(client, service)]
            if verdict.kind == PASS:
                text = explain(expected) + (f"; {verdict.detail}" if verdict.detail else "")
            elif verdict.kind in (WRONG_RULE, NOT_RUN):
                text = ""  # the detail names the rules counted and expected, or why it is not run
            else:
                text = f"routed by {describe(rules)}"
            cells.append(verdict_cell(verdict, text))
        lines.append(f"| {client} | " + " | ".join(cells) + " |")
    rows = [
        ("registered", "register"),
        ("routable", "routable"),
        ("removed", "delete"),
        ("refused after the removal", "gone"),
    ]
    for what, row in rows:
        verdicts = [lifecycle[s][row] for s in SERVICES]
        cells = [verdict_cell(v, v.detail if v.kind == PASS else "") for v in verdicts]
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


def mono_version():
    match = re.search(r"version (\S+)", version(["mono", "--version"]))
    return match.group(1) if match else "unknown"


def version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
