#!/usr/bin/env python3
"""The failover workload: writes and routed requests through the load balancer, all recorded.

While a scenario runs, the workload keeps registering fresh endpoints and unregistering some of the
ones it registered, through the load balancer's control API (about 80 writes/s), and keeps sending
routed requests (SOAP `ICalculator/Echo` and plain HTTP `IEcho`, about 100/s) through its data
plane to the sample services. Operations are issued open loop, each on its own thread. Every
operation becomes one JSON line in the history file:

    {"kind": "register" | "unregister" | "route", "start": <unix s>, "end": <unix s>,
     "outcome": "ok" | "fail" | "unknown", "status": <http status or null>, "code": <error code>,
     "error": <transport error>, "address": ..., "id": ..., "contract": "soap" | "echo"}

Outcomes of writes:
  ok       2xx: acknowledged, it must survive (register) or stay gone (unregister)
  fail     definitely not applied: a 4xx refusal, 503 `no_leader` from a router, or 503 from the
           load balancer itself (no router was reachable, so the request reached none)
  unknown  indeterminate: timed out, connection broken after the request was sent, 504
           `outcome_unknown`, 502/504 from the load balancer, 503 `shutting_down`. It may or may
           not have been applied; the checker accepts either.
A routed request is ok when the answer is 2xx; anything else (status or transport error) failed.

Five times a second it also counts the sample services' leased registrations through the load
balancer ({"kind": "leases", "present": n, "expected": 6}): the samples renew their leases all
along, so a count below 6 means the cluster dropped a lease that was being renewed.

Workload registrations are permanent (no lease), each with a unique address under the contract
`urn:switchboard:failover/IWorkload`, which nothing routes to, and a check of kind none (their
addresses do not resolve; only the sample services are probed). Only the standard library is used.

Run alone against any load balancer:  python3 workload.py --lb 172.29.10.2 --seconds 30 --history h.jsonl
"""

import argparse
import http.client
import os
import json
import random
import socket
import threading
import time
import urllib.parse

NAMESPACE = "urn:switchboard:failover"
CONTRACT = "IWorkload"
SOAP_ENVELOPE = (
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    '<s:Body><Echo xmlns="http://tempuri.org/"/></s:Body></s:Envelope>'
).encode()


class History:
    """Appends one JSON object per line; safe to share between threads."""

    def __init__(self, path):
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, entry):
        line = json.dumps(entry, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self):
        with self._lock:
            self._file.close()


class Answer:
    """What one HTTP exchange gave: a status and body, or the error that broke it off."""

    def __init__(self, status=None, body=b"", error=None, sent=True, error_header=None):
        self.status = status
        self.body = body
        self.error = error
        # The data plane names its error in X-Switchboard-Error (its SOAP faults are not JSON).
        self.error_header = error_header
        # False when the connection could not even be opened: the request reached nobody.
        self.sent = sent

    def json_code(self):
        try:
            return json.loads(self.body).get("code")
        except (ValueError, AttributeError):
            return None

    def error_code(self):
        """The router's error code, or "load_balancer" when HAProxy itself answered."""
        return self.error_header or self.json_code() or "load_balancer"


def exchange(host, port, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection (so a broken connection never hides a sent request)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            connection.connect()
        except OSError as err:
            return Answer(error=f"connect: {err}", sent=False)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(status=response.status, body=response.read(),
                          error_header=response.getheader("X-Switchboard-Error"))
        except socket.timeout:
            return Answer(error="timeout")
        except (OSError, http.client.HTTPException) as err:
            return Answer(error=f"{type(err).__name__}: {err}")
    finally:
        connection.close()


def write_outcome(answer):
    """ok / fail / unknown for a write, as the module docstring defines them."""
    if answer.status is None:
        return "unknown" if answer.sent else "fail"
    if 200 <= answer.status < 300:
        return "ok"
    if 400 <= answer.status < 500:
        return "fail"
    if answer.status == 503:
        code = answer.json_code()
        # A router's no_leader: nothing was proposed. No JSON at all: HAProxy's own 503, which it
        # sends only when no router could be connected to.
        if code == "no_leader" or code is None:
            return "fail"
    return "unknown"


class Workload:
    """Open-loop writes and routed requests against one load balancer; start(), then stop().

    Operations are issued at a fixed rate, each on its own thread, whatever the ones before are
    doing (at most `max_outstanding` of a kind at once): like many independent clients, so a
    request stuck on a frozen node does not hold back the next ones and the acknowledgement
    gaps measure the cluster, not the client.
    """

    def __init__(self, token, lb_host, history_path, run_id, write_every=0.0125, route_every=0.01, lease_every=0.2,
                 unregister_share=0.35, timeout=12.0, api_port=8081, data_port=8080, max_outstanding=64,
                 max_seconds=600, sample_leases=6):
        self.lb_host = lb_host
        # Control API calls carry the operators' token; routed requests need none.
        self.auth = {"Authorization": f"Bearer {token}"}
        self.api_port = api_port
        self.data_port = data_port
        self.history = History(history_path)
        self.run_id = run_id
        self.write_every = write_every
        self.route_every = route_every
        self.lease_every = lease_every
        self.sample_leases = sample_leases
        self.unregister_share = unregister_share
        self.timeout = timeout
        self.max_outstanding = max_outstanding
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._dispatchers = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._outstanding = {"write": 0, "route": 0, "leases": 0}
        self._live = []  # (id, address): acknowledged registrations not yet picked for removal
        self._seq = 0
        self.counts = {"write_ok": 0, "write_other": 0, "route_ok": 0, "route_failed": 0, "skipped": 0}

    def snapshot(self):
        with self._lock:
            return dict(self.counts)

    def start(self):
        self._deadline = time.time() + self.max_seconds
        for kind, every, op in (("write", self.write_every, self._write), ("route", self.route_every, self._route),
                                ("leases", self.lease_every, self._leases)):
            thread = threading.Thread(target=self._dispatch, args=(kind, every, op), name=f"{kind}-dispatch", daemon=True)
            self._dispatchers.append(thread)
            thread.start()
        return self

    def stop(self):
        """Stops issuing operations and waits (bounded) for those in flight; returns how many hang."""
        self._stop.set()
        for thread in self._dispatchers:
            thread.join(5)
        deadline = time.time() + self.timeout + 5
        with self._idle:
            while sum(self._outstanding.values()) and time.time() < deadline:
                self._idle.wait(0.1)
            hanging = sum(self._outstanding.values())
        self.history.close()
        return hanging

    def _running(self):
        return not self._stop.is_set() and time.time() < self._deadline

    def _dispatch(self, kind, every, op):
        next_at = time.time()
        while self._running():
            with self._lock:
                busy = self._outstanding[kind] >= self.max_outstanding
                if busy:
                    self.counts["skipped"] += 1
                else:
                    self._outstanding[kind] += 1
            if not busy:
                threading.Thread(target=self._run_op, args=(kind, op), daemon=True).start()
            # A little jitter keeps the operations from marching in step.
            next_at += every * random.uniform(0.5, 1.5)
            self._stop.wait(max(0.0, next_at - time.time()))

    def _run_op(self, kind, op):
        try:
            op()
        finally:
            with self._idle:
                self._outstanding[kind] -= 1
                self._idle.notify_all()

    # === writes ===

    def _write(self):
        with self._lock:
            pick = None
            if self._live and random.random() < self.unregister_share:
                pick = self._live.pop(random.randrange(len(self._live)))
            else:
                self._seq += 1
                seq = self._seq
        if pick is not None:
            self._unregister(*pick)
        else:
            registration_id, address = self._register(f"http://failover.invalid/{self.run_id}/{seq}")
            if registration_id is not None:
                with self._lock:
                    self._live.append((registration_id, address))

    def _register(self, address):
        # Placeholders nothing routes to, at names that do not resolve: never probed.
        body = json.dumps({"address": address, "contract_name": CONTRACT, "contract_namespace": NAMESPACE,
                           "check": {"kind": "none"}}).encode()
        start = time.time()
        answer = exchange(self.lb_host, self.api_port, "POST", "/v1/registrations", body,
                          {"content-type": "application/json", **self.auth}, self.timeout)
        end = time.time()
        outcome = write_outcome(answer)
        registration_id = None
        if outcome == "ok":
            try:
                registration_id = json.loads(answer.body)["id"]
            except (ValueError, KeyError, TypeError):
                outcome = "unknown"  # acknowledged but unreadable: treat as indeterminate
        self._record("register", start, end, outcome, answer, address=address, id=registration_id)
        return registration_id, address

    def _unregister(self, registration_id, address):
        start = time.time()
        answer = exchange(self.lb_host, self.api_port, "DELETE", f"/v1/registrations/{registration_id}",
                          None, self.auth, self.timeout)
        end = time.time()
        self._record("unregister", start, end, write_outcome(answer), answer, address=address, id=registration_id)

    # === routed requests ===

    def _route(self):
        with self._lock:
            self._seq += 1
            turn = self._seq
        start = time.time()
        if turn % 2:
            contract = "soap"
            headers = {"content-type": "text/xml; charset=utf-8",
                       "SOAPAction": '"http://tempuri.org/ICalculator/Echo"'}
            answer = exchange(self.lb_host, self.data_port, "POST", "/", SOAP_ENVELOPE, headers, self.timeout)
        else:
            contract = "echo"
            headers = {"X-Switchboard-Contract": "urn:switchboard:samples/IEcho"}
            answer = exchange(self.lb_host, self.data_port, "GET", f"/failover/{turn}", None, headers, self.timeout)
        end = time.time()
        outcome = "ok" if answer.status is not None and 200 <= answer.status < 300 else "fail"
        self._record("route", start, end, outcome, answer, contract=contract)

    # === the sample services' leases ===

    def _leases(self):
        """Counts the sample services' leased registrations (they heartbeat all along, so every
        one of them should always be there). A failed read is recorded as such, not as missing."""
        start = time.time()
        present = 0
        answer = None
        for namespace in ("urn:switchboard:samples", "http://tempuri.org/"):
            query = urllib.parse.urlencode({"contract_namespace": namespace})
            answer = exchange(self.lb_host, self.api_port, "GET", f"/v1/registrations?{query}", None, self.auth, self.timeout)
            if answer.status != 200:
                break
            try:
                registrations = json.loads(answer.body)["registrations"]
            except (ValueError, KeyError, TypeError):
                answer = Answer(status=answer.status, error="unreadable registration list")
                break
            present += sum(1 for r in registrations if r.get("ttl_ms") is not None)
        end = time.time()
        outcome = "ok" if answer.status == 200 and not answer.error else "fail"
        self._record("leases", start, end, outcome, answer, present=present if outcome == "ok" else None,
                     expected=self.sample_leases)

    def _record(self, kind, start, end, outcome, answer, **fields):
        entry = {"kind": kind, "start": round(start, 6), "end": round(end, 6), "outcome": outcome,
                 "status": answer.status}
        if answer.status is not None and not 200 <= answer.status < 300:
            entry["code"] = answer.error_code()
        if answer.error:
            entry["error"] = answer.error
        entry.update(fields)
        self.history.record(entry)
        with self._lock:
            if kind == "route":
                self.counts["route_ok" if outcome == "ok" else "route_failed"] += 1
            elif kind == "leases":
                pass
            else:
                self.counts["write_ok" if outcome == "ok" else "write_other"] += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lb", required=True, help="load balancer host (data plane :8080, control API :8081)")
    parser.add_argument("--history", required=True, help="JSON lines file to append to")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to run (at most 600)")
    parser.add_argument("--token", default=os.environ.get("SWITCHBOARD_OPS_TOKEN", ""),
                        help="API token for the control API [env SWITCHBOARD_OPS_TOKEN]")
    args = parser.parse_args()
    seconds = min(args.seconds, 600.0)
    workload = Workload(args.token, args.lb, args.history, f"run{int(time.time())}", max_seconds=seconds).start()
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    workload.stop()
    print(json.dumps(workload.snapshot()))


if __name__ == "__main__":
    main()
