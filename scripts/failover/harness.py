#!/usr/bin/env python3
"""Failover scenarios against the compose cluster (docker-compose.yml), one per invocation.

    python3 scripts/failover/harness.py SCENARIO      (or: bash scripts/failover/SCENARIO.sh)

Each scenario starts a fresh cluster (its own compose project, networks and volumes), starts the
workload (workload.py) through the load balancer, injects its fault, heals it, waits until the three
nodes agree, stops the workload, runs the checker (check.py) and deletes everything it created,
whatever happened. Results go to target/failover/SCENARIO/: history.jsonl, events.jsonl,
final-state.json, result.json, harness.log and the containers' logs.

The harness talks to the nodes over the compose networks (container addresses), never through
published ports: a paused container's published port still accepts connections.

Every wait polls with a deadline; the only fixed waits are the fault durations themselves.
Needs: docker, a compose tool (docker compose v2 or docker-compose 1.29), python3, and for the
peer-cut scenarios (partition-leader-peers, wipe-and-kill-leader) nsenter and iptables on the host
(root). Images must exist (scripts/images.sh).
"""

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, str(Path(__file__).resolve().parent))
import check  # noqa: E402
from check import Bound  # noqa: E402
import workload as workload_mod  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
NODES = (1, 2, 3)
PEER_PORT = 8082

# Bounds of the phases of a scenario (seconds).
UP_DEADLINE = 120
WARMUP_SECONDS = 2
WARMUP_DEADLINE = 30
LEADER_DEADLINE = 20
HEAL_DEADLINE = 60
CONVERGE_DEADLINE = 45
POST_HEAL_SECONDS = 3
PARTITION_SECONDS = 8
QUORUM_LOSS_SECONDS = 8
WORKLOAD_MAX_SECONDS = 300


class ScenarioError(Exception):
    """The scenario could not proceed (a wait ran out, a command failed)."""


class Cluster:
    """One compose project: its containers, faults on them, and probes over its networks."""

    def __init__(self, results):
        self.results = results
        self.project = os.environ.get("SWITCHBOARD_FAILOVER_PROJECT", "sbfailover")
        self.front = os.environ.get("SWITCHBOARD_FAILOVER_NET_FRONT", "172.29.20")
        self.peer = os.environ.get("SWITCHBOARD_FAILOVER_NET_PEER", "172.29.21")
        self.env = dict(os.environ)
        self.env.update({
            "SWITCHBOARD_PROJECT": self.project,
            "SWITCHBOARD_NET_FRONT": self.front,
            "SWITCHBOARD_NET_PEER": self.peer,
            # Publish the load balancer on free loopback ports only; the harness does not use them.
            "SWITCHBOARD_LB_BIND": "127.0.0.1",
            "SWITCHBOARD_LB_DATA_PORT": "",
            "SWITCHBOARD_LB_API_PORT": "",
            # The harness restarts nodes itself.
            "SWITCHBOARD_RESTART": "no",
            "SWITCHBOARD_CLUSTER_SECRET": secrets.token_hex(24),
            "RUST_LOG": os.environ.get("RUST_LOG", "info,openraft=warn"),
        })
        self.log = open(results / "harness.log", "a", encoding="utf-8")
        self.events = open(results / "events.jsonl", "a", encoding="utf-8")
        self.undo = []  # (description, callable): faults to lift before tearing down
        self.after_down = []  # (description, callable): what outlives the containers (mounts)
        self.disks = {}  # node -> host directory bound as its data directory
        self.networks = {}
        self.started = time.time()

    # === bookkeeping ===

    def say(self, message):
        line = f"[{time.time() - self.started:7.2f}s] {message}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def event(self, event, detail=""):
        entry = {"t": round(time.time(), 6), "event": event, "detail": detail}
        self.events.write(json.dumps(entry) + "\n")
        self.events.flush()
        self.say(f"{event}: {detail}" if detail else event)

    # === commands ===

    def run(self, args, timeout=120, check_rc=True, capture=False):
        self.log.write(f"$ {' '.join(args)}\n")
        self.log.flush()
        try:
            done = subprocess.run(args, env=self.env, timeout=timeout, text=True,
                                  stdout=subprocess.PIPE if capture else self.log, stderr=self.log)
        except subprocess.TimeoutExpired:
            raise ScenarioError(f"{' '.join(args[:4])} ... did not finish within {timeout} s")
        if check_rc and done.returncode != 0:
            raise ScenarioError(f"{' '.join(args)} failed with status {done.returncode} (see harness.log)")
        return done.stdout.strip() if capture else done.returncode

    def compose(self, *args, timeout=120, check_rc=True, capture=False):
        return self.run(["bash", str(CLUSTER_SH), "compose", *args], timeout, check_rc, capture)

    def container(self, node):
        """The node's container id."""
        return self.service(f"node{node}")

    def pid(self, node):
        pid = int(self.run(["docker", "inspect", "-f", "{{.State.Pid}}", self.container(node)], capture=True))
        if pid <= 0:
            raise ScenarioError(f"node{node} is not running")
        return pid

    def network(self, name):
        if name not in self.networks:
            found = self.run(["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                              "--filter", f"label=com.docker.compose.network={name}"], capture=True)
            if not found:
                raise ScenarioError(f"network {name} of {self.project} not found")
            self.networks[name] = found.splitlines()[0]
        return self.networks[name]

    # === probes (over the compose networks) ===

    def api(self, node):
        return f"http://{self.front}.1{node}:8081"

    @property
    def lb(self):
        return f"{self.front}.2"

    @property
    def token(self):
        """The operators' API token scripts/cluster.sh made for this cluster (read after `up`)."""
        path = REPO / "target" / "docker" / f"secrets-{self.peer}" / "ops-token"
        return path.read_text().strip()

    def get_json(self, url, timeout=1.0):
        try:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def ready(self, node, plane="control"):
        """The node's readiness as the load balancer checks it, on its health listener (:8083):
        the control API's (GET /health/ready, leader-aware) or the data plane's
        (GET /health/ready?plane=data: caught up once since start, through elections and
        quorum losses)."""
        query = "?plane=data" if plane == "data" else ""
        try:
            with urllib.request.urlopen(f"http://{self.front}.1{node}:8083/health/ready{query}",
                                        timeout=1.0) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def view(self, node):
        return self.get_json(f"{self.api(node)}/v1/cluster")

    def wait(self, what, predicate, deadline, every=0.1):
        """Polls predicate() until it returns something truthy; fails after deadline seconds."""
        until = time.time() + deadline
        while True:
            value = predicate()
            if value:
                return value
            if time.time() >= until:
                raise ScenarioError(f"timed out after {deadline} s waiting for {what}")
            time.sleep(every)

    def agreed_leader(self, among=NODES):
        """The node that two of `among` name as leader and that says it leads, or None (one poll)."""
        views = {n: self.view(n) for n in among}
        leaders = [v.get("leader_id") for v in views.values() if v]
        for candidate in set(leaders):
            if candidate in among and leaders.count(candidate) >= 2 and (views[candidate] or {}).get("role") == "leader":
                return candidate
        return None

    def leader(self, exclude=(), deadline=LEADER_DEADLINE):
        among = tuple(n for n in NODES if n not in exclude)
        return self.wait(f"a leader among nodes {among}", lambda: self.agreed_leader(among), deadline)

    def followers(self, leader):
        return [n for n in NODES if n != leader]

    def lb_servers(self, backend="routers_api"):
        """HAProxy's view of the routers: {server name: status} in one backend: routers_api (the
        control API, checked on /health/ready) or routers_data (the data plane, checked on
        /health/ready?plane=data)."""
        try:
            with urllib.request.urlopen(f"http://{self.lb}:8404/;csv", timeout=1.0) as response:
                lines = response.read().decode().splitlines()
        except (OSError, urllib.error.URLError):
            return {}
        header = lines[0].lstrip("# ").split(",")
        servers = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == backend and row.get("svname", "").startswith("node"):
                servers[row["svname"]] = row.get("status", "")
        return servers

    def all_healthy(self):
        """Every node ready on both checks and UP in both of the load balancer's backends."""
        if not all(self.ready(n, plane) for n in NODES for plane in ("control", "data")):
            return False
        for backend in ("routers_api", "routers_data"):
            servers = self.lb_servers(backend)
            # "UP 1/2" is a server already failing its checks: only a plain "UP" counts.
            if len(servers) != 3 or any(status != "UP" for status in servers.values()):
                return False
        return True

    def out_of_lb(self, node):
        """The node is DOWN in both of the load balancer's backends."""
        return all(self.lb_servers(backend).get(f"node{node}", "UP").startswith("DOWN")
                   for backend in ("routers_api", "routers_data"))

    def registrations(self, node, timeout=5.0):
        """Every registration on a node, page by page: {"registrations": [...], "applied_index": n}
        (the index of the last page), or None."""
        registrations, cursor = [], None
        while True:
            query = "limit=5000" + (f"&cursor={cursor}" if cursor else "")
            page = self.get_json(f"{self.api(node)}/v1/registrations?{query}", timeout=timeout)
            if not page:
                return None
            registrations += page["registrations"]
            cursor = page.get("next_cursor")
            if not cursor:
                return {"registrations": registrations, "applied_index": page["applied_index"]}

    def samples_registered(self):
        """Every node holds both samples' three leases."""
        for node in NODES:
            state = self.registrations(node)
            if not state:
                return False
            instances = [r.get("metadata", {}).get("instance") for r in state["registrations"]]
            if instances.count("sample1") != 3 or instances.count("sample2") != 3:
                return False
        return True

    def caught_up(self):
        """Every node has applied what the leader had applied when asked (writes go on meanwhile,
        so equal indexes would be luck; the final agreement is checked once the workload stops)."""
        leader = self.agreed_leader()
        target = (self.view(leader) or {}).get("last_applied_index") if leader else None
        if target is None:
            return False
        return all(((self.view(n) or {}).get("last_applied_index") or -1) >= target for n in NODES)

    def converged(self):
        """The nodes' states when all three hold the same registrations at the same applied index."""
        states = {}
        for node in NODES:
            state = self.registrations(node)
            if not state:
                return None
            states[str(node)] = state
        ids = {n: sorted(r["id"] for r in s["registrations"]) for n, s in states.items()}
        indexes = {s["applied_index"] for s in states.values()}
        if len({tuple(v) for v in ids.values()}) == 1 and len(indexes) == 1:
            return states
        return None

    # === life cycle ===

    def up(self):
        self.say(f"starting a fresh cluster (project {self.project}, front {self.front}.0/24, peer {self.peer}.0/24)")
        self.down(quiet=True)
        self.compose("up", "-d", timeout=UP_DEADLINE)
        self.wait("all three nodes ready and in the load balancer", self.all_healthy, UP_DEADLINE, every=0.2)
        self.wait("the sample services registered on every node", self.samples_registered, UP_DEADLINE, every=0.2)
        self.say(f"cluster up; node{self.leader()} leads")

    def down(self, quiet=False):
        if not quiet:
            self.say("tearing the cluster down")
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=180, check_rc=not quiet)

    def save_logs(self):
        with open(self.results / "containers.log", "w", encoding="utf-8") as out:
            subprocess.run(["bash", str(CLUSTER_SH), "compose", "logs", "--no-color", "--timestamps"],
                           env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=60, check=False)

    def release(self):
        """Undoes what had to outlive the containers; after `down`."""
        while self.after_down:
            what, action = self.after_down.pop()
            try:
                self.say(f"cleanup: {what}")
                action()
            except Exception as err:  # keep cleaning up
                self.say(f"cleanup of {what} failed: {err}")

    def lift_faults(self):
        while self.undo:
            what, action = self.undo.pop()
            try:
                self.say(f"cleanup: {what}")
                action()
            except Exception as err:  # keep cleaning up
                self.say(f"cleanup of {what} failed: {err}")

    # === faults ===

    def injected(self, what):
        """Records that a fault has taken effect (its command returned): the checker times the first
        acknowledgement after a fault from the last such event."""
        self.event("injected", what)

    def service(self, name):
        """A compose service's container id (docker's own filter on compose's labels: fast, v1 and v2
        alike)."""
        cid = self.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}",
                        "--filter", f"label=com.docker.compose.service={name}"], capture=True)
        if not cid:
            raise ScenarioError(f"{name} has no container")
        return cid.splitlines()[0]

    def kill_service(self, name):
        self.run(["docker", "kill", "--signal", "KILL", self.service(name)])
        self.injected(f"{name} killed")

    def start_service(self, name):
        self.run(["docker", "start", self.service(name)])

    def kill(self, node):
        self.run(["docker", "kill", "--signal", "KILL", self.container(node)])
        self.injected(f"node{node} killed")

    def start(self, node):
        self.run(["docker", "start", self.container(node)])

    def stop(self, node):
        self.run(["docker", "stop", "--time", "10", self.container(node)], timeout=60)

    def sigstop(self, node):
        """Freezes the node's process with SIGSTOP (docker delivers it: no host privileges needed)."""
        cid = self.container(node)
        self.run(["docker", "kill", "--signal", "STOP", cid])
        self.undo.append((f"SIGCONT node{node}", lambda: self.run(["docker", "kill", "--signal", "CONT", cid])))
        self.injected(f"node{node} frozen")

    def sigcont(self, node):
        self.run(["docker", "kill", "--signal", "CONT", self.container(node)])
        self.undo = [(w, a) for (w, a) in self.undo if w != f"SIGCONT node{node}"]

    def iptables(self, node, action):
        """Adds (-I) or deletes (-D) the rules that drop this node's peer traffic, both ways."""
        pid = self.pid(node)
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        for chain in ("INPUT", "OUTPUT"):
            self.run(sudo + ["nsenter", "-t", str(pid), "-n", "iptables", "-w", action, chain, "-p", "tcp",
                             "--dport", str(PEER_PORT), "-j", "DROP"])

    def cut_peers(self, node):
        self.iptables(node, "-I")
        self.undo.append((f"peer traffic of node{node}", lambda: self.iptables(node, "-D")))
        self.injected(f"node{node}'s peer traffic dropped")

    def heal_peers(self, node):
        self.iptables(node, "-D")
        self.undo = [(w, a) for (w, a) in self.undo if w != f"peer traffic of node{node}"]

    def disconnect(self, node):
        cid = self.container(node)
        for name in ("front", "peer"):
            self.run(["docker", "network", "disconnect", self.network(name), cid])
        self.undo.append((f"reconnect node{node}", lambda: self.connect(node)))
        self.injected(f"node{node} disconnected")

    def connect(self, node):
        cid = self.container(node)
        self.undo = [(w, a) for (w, a) in self.undo if w != f"reconnect node{node}"]
        for name, prefix in (("front", self.front), ("peer", self.peer)):
            # The same address as before, so peers and the load balancer find it again.
            self.run(["docker", "network", "connect", "--ip", f"{prefix}.1{node}", self.network(name), cid],
                     check_rc=False)

    def wipe(self, node):
        """Kills the node and deletes its container and data volume."""
        self.kill(node)
        self.erase(node)

    def erase(self, node):
        """Deletes the (killed) node's container and data volume."""
        self.compose("rm", "-f", "-s", f"node{node}")
        volume = self.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                           "--filter", f"label=com.docker.compose.volume=node{node}-data"], capture=True)
        if not volume:
            raise ScenarioError(f"the data volume of node{node} was not found")
        self.run(["docker", "volume", "rm", volume])

    def recreate(self, node):
        self.compose("up", "-d", "--no-deps", f"node{node}", timeout=UP_DEADLINE)

    def running(self, node):
        state = self.run(["docker", "inspect", "-f", "{{.State.Running}}", self.container(node)], capture=True)
        return state == "true"

    def small_disks(self, size="64m"):
        """Before `up`: every node's data directory on a small tmpfs of the host, bound into its
        container through a compose override, so that the harness can fill one up."""
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        override = ['version: "2.4"', "services:"]
        for node in NODES:
            path = self.results / "disks" / f"node{node}"
            path.mkdir(parents=True, exist_ok=True)
            self.run(sudo + ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
            self.after_down.append((f"unmount {path}", lambda path=path: self.run(sudo + ["umount", "-l", str(path)])))
            self.disks[node] = path
            override += [f"  node{node}:", "    volumes:", f"      - {path}:/data"]
        (self.results / "compose.override.yml").write_text("\n".join(override) + "\n")
        self.env["SWITCHBOARD_COMPOSE_OVERRIDE"] = str(self.results / "compose.override.yml")

    def fill(self, node):
        """Fills the node's data disk until not one byte is left."""
        chunk = b"\0" * (1 << 16)
        with open(self.disks[node] / "filler", "wb", buffering=0) as filler:
            for size in (len(chunk), 1):
                try:
                    while True:
                        filler.write(chunk[:size])
                except OSError:
                    pass
        self.injected(f"node{node}'s disk is full")

    def unfill(self, node):
        (self.disks[node] / "filler").unlink()

    def member(self, node, of=None):
        """The membership entry of `node` in the view of node `of` (the leader by default)."""
        view = self.view(of if of is not None else self.leader()) or {}
        return next((m for m in view.get("members", []) if m.get("id") == node), None)

    def members(self, of):
        """{id: (role, incarnation)} of every member in the view of node `of`, or None."""
        view = self.view(of)
        if not view:
            return None
        return {m["id"]: (m.get("role"), m.get("incarnation")) for m in view.get("members", [])}

    def voters_before_wipe(self, leader):
        """The leader's membership before a node is wiped: all three voters, each with its incarnation."""
        members = self.members(leader)
        if not members or sorted(members) != list(NODES) or any(role != "voter" or not incarnation
                                                                 for role, incarnation in members.values()):
            raise ScenarioError(f"expected three voters with incarnations before the wipe, node{leader} lists {members}")
        return members

    def still_learner(self, node, old, of, claim):
        """Checks, once the leader is frozen or dead (so no membership change can follow), that node
        `of` sees `node`'s new incarnation as a learner: the fault landed while the change was under
        way, as the scenario claims. Fails the scenario otherwise: it would test something else."""
        view = self.wait(f"node{of}'s view of the membership", lambda: self.view(of), 10, every=0.1)
        member = next((m for m in view.get("members", []) if m.get("id") == node), None)
        if not member or member.get("role") != "learner" or member.get("incarnation") in (None, old):
            raise ScenarioError(f"the fault missed the membership change ({claim}): node{of} lists node{node} "
                                f"as {member}")
        self.event("verified", f"{claim}: node{of} lists node{node} as a learner under its new incarnation")

    def wait_rejoined(self, wiped, before, deadline=HEAL_DEADLINE):
        """Waits for the exact membership after `wiped` came back empty: the three nodes are voters
        (nothing else is a member), `wiped` under a new incarnation, the others under the ones they
        had (`before`, from voters_before_wipe), in the view of a leader the others agree on. The
        old membership, which also lists three voters, does not pass."""
        expected = ", ".join(f"node{n} {'new incarnation' if n == wiped else before[n][1]}" for n in NODES)
        seen = {}

        def rejoined():
            leader = self.agreed_leader()
            members = self.members(leader) if leader else None
            seen["last"] = (leader, members)
            if not members or sorted(members) != list(NODES):
                return False
            for node, (role, incarnation) in members.items():
                if role != "voter":
                    return False
                if node == wiped and incarnation in (None, before[node][1]):
                    return False
                if node != wiped and incarnation != before[node][1]:
                    return False
            return True

        try:
            self.wait(f"node{wiped} a voter again under a new incarnation ({expected})", rejoined, deadline, every=0.2)
        except ScenarioError as err:
            leader, members = seen.get("last", (None, None))
            raise ScenarioError(f"{err}; last seen: leader {leader}, members {members}") from None
        self.say(f"node{wiped} is a voter again under its new incarnation {self.members(self.agreed_leader() or wiped)}")

    def no_leader_among(self, nodes, seconds, why):
        """Fails if any of `nodes` becomes leader within `seconds` (an observation window)."""
        self.say(f"watching {seconds:.1f} s: {why}")
        until = time.time() + seconds
        while time.time() < until:
            for node in nodes:
                if (self.view(node) or {}).get("role") == "leader":
                    raise ScenarioError(f"node{node} became leader: {why}")
            time.sleep(0.05)

    def preload(self, count, metadata_kb, threads=8):
        """Registers `count` extra registrations (not the workload's) with `metadata_kb` KiB of
        metadata each through the load balancer, so the state is large enough to take a while
        to transfer."""
        import concurrent.futures
        value = "m" * 1000
        metadata = {f"k{i}": value for i in range(metadata_kb)}

        def one(i):
            body = json.dumps({"address": f"http://10.99.{i // 250}.{i % 250}:9/", "contract_name": "Bulk",
                               "contract_namespace": "urn:switchboard:bulk", "metadata": metadata,
                               "check": {"kind": "none"}}).encode()
            request = urllib.request.Request(f"http://{self.lb}:8081/v1/registrations", data=body, method="POST",
                                             headers={"Authorization": f"Bearer {self.token}",
                                                      "Content-Type": "application/json"})
            for _ in range(20):
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        if response.status in (200, 201):
                            return True
                except (OSError, urllib.error.URLError):
                    time.sleep(0.2)
            return False

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            done = sum(pool.map(one, range(count)))
        if done != count:
            raise ScenarioError(f"preloading: {count - done} of {count} registrations failed")
        self.say(f"preloaded {count} registrations of {metadata_kb} KiB metadata")

    def hold(self, seconds, why):
        """A fault's duration: the one kind of fixed wait (not used to synchronise)."""
        self.say(f"holding {seconds:.1f} s: {why}")
        time.sleep(seconds)

    def hold_routing(self, seconds, nodes, why, every=0.2):
        """A fault's duration, like hold(), during which each of `nodes` must stay ready to route:
        at every poll its data-plane readiness (/health/ready?plane=data) answers 200 and the load
        balancer has it UP in the data backend ("UP 1/2", one check missed, still routes). Fails
        the scenario at the first poll that says otherwise."""
        self.say(f"holding {seconds:.1f} s: {why}; node(s) {', '.join(map(str, nodes))} must keep routing")
        until = time.time() + seconds
        polls = 0
        while True:
            for node in nodes:
                status = self.lb_servers("routers_data").get(f"node{node}", "missing")
                if not self.ready(node, "data"):
                    raise ScenarioError(f"node{node} reported its data plane not ready after {polls} polls: {why}")
                if not status.startswith("UP"):
                    raise ScenarioError(f"the load balancer took node{node} out of the data backend ({status}) "
                                        f"after {polls} polls: {why}")
            polls += 1
            left = until - time.time()
            if left <= 0:
                break
            time.sleep(min(every, left))
        self.event("verified", f"node(s) {', '.join(map(str, nodes))} data-ready and UP in the data backend at "
                               f"each of {polls} polls over {seconds:.1f} s")

    def no_leader_known(self, node):
        """One poll: `node` answers and names no leader (and does not lead)."""
        view = self.view(node)
        return bool(view) and view.get("leader_id") is None and view.get("role") != "leader"

    def wait_healed(self, detail="every node ready and back in the load balancer"):
        self.wait("every node ready and back in the load balancer", self.all_healthy, HEAL_DEADLINE, every=0.1)
        self.event("healed", detail)


# === scenarios ===

def kill_leader(c):
    leader = c.leader()
    c.event("fault", f"kill -9 node{leader} (the leader)")
    c.kill(leader)
    new = c.leader(exclude=(leader,))
    c.say(f"node{new} leads")
    c.hold(3, "two nodes serve while the old leader is down")
    c.event("restart", f"start node{leader}")
    c.start(leader)
    c.wait_healed()


def kill_follower(c):
    follower = random.choice(c.followers(c.leader()))
    c.event("fault", f"kill -9 node{follower} (a follower)")
    c.kill(follower)
    c.hold(4, "two nodes serve while the follower is down")
    c.event("restart", f"start node{follower}")
    c.start(follower)
    c.wait_healed()


def pause_leader(c):
    leader = c.leader()
    c.event("fault", f"SIGSTOP node{leader} (the leader)")
    c.sigstop(leader)
    new = c.leader(exclude=(leader,))
    c.say(f"node{new} leads")
    c.wait("the paused node out of both of the load balancer's backends", lambda: c.out_of_lb(leader), 10)
    c.hold(2, "the old leader stays frozen well past the election timeout")
    c.event("resume", f"SIGCONT node{leader}")
    c.sigcont(leader)
    c.wait_healed()


def partition_leader_peers(c):
    leader = c.leader()
    c.event("fault", f"drop node{leader}'s peer traffic (port {PEER_PORT}, both ways); the load balancer still reaches it")
    cut_at = time.time()
    c.cut_peers(leader)
    new = c.leader(exclude=(leader,))
    c.say(f"node{new} leads the majority")
    c.wait("the cut-off leader to report the control API not ready", lambda: not c.ready(leader), 10)
    c.wait("the cut-off leader out of the control API backend",
           lambda: c.lb_servers("routers_api").get(f"node{leader}", "UP").startswith("DOWN"), 10)
    # Longer than the samples' 5 s lease: the cut-off leader's view of the leases goes stale. It
    # routes from its replica all along: it stays in the data backend.
    c.hold_routing(max(0.0, PARTITION_SECONDS - (time.time() - cut_at)), [leader],
                   "the majority serves writes while the old leader is cut off")
    c.event("heal", f"restore node{leader}'s peer traffic")
    c.heal_peers(leader)
    c.wait_healed()


def disconnect_node(c):
    leader = c.leader()
    c.event("fault", f"disconnect node{leader} (the leader) from every network")
    c.disconnect(leader)
    new = c.leader(exclude=(leader,))
    c.say(f"node{new} leads")
    c.hold(4, "the majority serves while the old leader is disconnected")
    c.event("heal", f"reconnect node{leader} with its addresses")
    c.connect(leader)
    c.wait_healed()


def rolling_restart(c):
    leader = c.leader()
    order = c.followers(leader) + [leader]
    c.event("fault", f"rolling restart, order {', '.join(f'node{n}' for n in order)} (leader last)")
    for node in order:
        c.say(f"restarting node{node} (SIGTERM, then start)")
        c.stop(node)
        c.start(node)
        c.wait(f"node{node} ready and back in the load balancer", c.all_healthy, HEAL_DEADLINE)
        c.wait("every node caught up with the leader", c.caught_up, CONVERGE_DEADLINE, every=0.1)
    c.wait_healed()


def kill_all(c):
    c.event("fault", "kill -9 all three nodes")
    for node in NODES:
        c.kill(node)
    c.hold(2, "the whole cluster is down")
    c.event("restart", "start all three nodes")
    for node in NODES:
        c.start(node)
    c.leader()
    c.wait_healed()


def kill_two_routers(c):
    leader = c.leader()
    follower = random.choice(c.followers(leader))
    survivor = next(n for n in c.followers(leader) if n != follower)
    c.event("fault", f"kill -9 node{follower} (a follower), then node{leader} (the leader): node{survivor} is left "
                     "alone, without a quorum")
    # The follower first: the leader and the survivor keep their quorum until the leader dies, so
    # the survivor can never have been elected (it would lead without a quorum).
    c.kill(follower)
    c.kill(leader)
    lost_at = time.time()
    c.wait(f"node{survivor} to know no leader", lambda: c.no_leader_known(survivor), 10, every=0.05)
    c.event("no-quorum", f"node{survivor} knows no leader and cannot be elected: every write must fail definitely")
    # Longer than the samples' 5 s lease (from the leader's death): no lease may be expired for
    # the outage, nor when the quorum returns.
    c.hold_routing(max(0.0, QUORUM_LOSS_SECONDS - (time.time() - lost_at)), [survivor],
                   f"node{survivor} routes from its replica while writes wait for a quorum")
    c.event("restart", f"start node{leader} and node{follower}")
    c.start(leader)
    c.start(follower)
    c.leader()
    c.wait_healed()


def wipe_node(c):
    leader = c.leader()
    follower = random.choice(c.followers(leader))
    before = c.voters_before_wipe(leader)
    c.event("fault", f"kill -9 node{follower} (a follower) and delete its data volume")
    c.wipe(follower)
    c.hold(2, "two nodes serve while the wiped node is gone")
    c.event("restart", f"node{follower} comes back with an empty data directory")
    c.recreate(follower)
    c.wait(f"node{follower} admitted again and ready", lambda: c.ready(follower), HEAL_DEADLINE)
    c.wait_rejoined(follower, before)
    c.wait_healed(f"node{follower} rejoined as a voter; every node ready")


def wipe_and_kill_leader(c):
    leader = c.leader()
    lagging, wiped = c.followers(leader)
    before = c.voters_before_wipe(leader)
    # The lagging follower is cut off from its peers, not frozen: it misses the writes that follow
    # but keeps serving the data plane from its replica all along, as the product promises.
    c.event("fault", f"drop node{lagging}'s peer traffic: the writes that follow are acknowledged without it")
    c.cut_peers(lagging)
    c.hold(2, f"writes acknowledged by node{leader} and node{wiped} only")
    c.event("fault", f"kill -9 node{leader} (the leader) and node{wiped}; restore node{lagging}'s peer traffic; "
                     f"node{wiped} returns with an empty data directory")
    c.kill(leader)
    c.kill(wiped)
    c.heal_peers(lagging)
    c.erase(wiped)
    c.recreate(wiped)
    # No quorum can form until the leader is back: every write must fail definitely meanwhile.
    c.event("no-quorum", f"node{leader} is dead, node{wiped} is empty and may not vote, node{lagging} is alone")
    c.no_leader_among((lagging, wiped), 3, f"node{lagging} lacks acknowledged writes and node{wiped} must not vote for it")
    c.event("restart", f"start node{leader}")
    c.start(leader)
    c.leader()
    c.wait_rejoined(wiped, before)
    c.wait_healed(f"node{wiped} rejoined as a voter; every node ready")


def kill_leader_during_snapshot_install(c):
    # About 6 MB of state, so that the transfer and the install take a while.
    c.preload(1500, 4)
    leader = c.leader()
    victim = random.choice(c.followers(leader))
    c.wait("the leader to compact its log (so a new node needs a snapshot)",
           lambda: (c.view(leader) or {}).get("purged_index") or 0, 90, every=0.2)
    before = c.voters_before_wipe(leader)
    old = before[victim][1]
    c.event("fault", f"kill -9 node{victim} and delete its data volume; it returns empty")
    c.wipe(victim)
    c.recreate(victim)

    def re_added():
        member = c.member(victim, leader) or {}
        return member.get("role") == "learner" and member.get("incarnation") != old

    c.wait(f"node{victim} re-added as a learner (the leader starts sending it a snapshot)", re_added,
           HEAL_DEADLINE, every=0.02)
    c.event("fault", f"kill -9 node{leader} (the leader) while node{victim} installs the snapshot")
    c.kill(leader)
    intact = next(n for n in c.followers(leader) if n != victim)
    c.still_learner(victim, old, intact, "the leader was killed before the wiped node had caught up")
    c.hold(2, "the leader is down in the middle of the transfer")
    c.event("restart", f"start node{leader}")
    c.start(leader)
    c.leader()
    c.wait_rejoined(victim, before)
    c.wait_healed(f"node{victim} caught up and is a voter; every node ready")


def disk_full_follower(c):
    follower = random.choice(c.followers(c.leader()))
    c.event("fault", f"node{follower}'s disk fills up")
    c.fill(follower)
    c.wait(f"node{follower} to stop: it can persist nothing, so it acknowledges nothing",
           lambda: not c.running(follower), 60, every=0.2)
    c.hold(2, "two nodes serve while the full node is down")
    c.event("heal", f"free node{follower}'s disk and start it again")
    c.unfill(follower)
    c.start(follower)
    c.wait_healed(f"node{follower} restarted from its intact log; every node ready")


def pause_leader_during_membership_change(c):
    # About 6 MB of state and a short snapshot interval (SETUP): the wiped node catches up through a
    # snapshot, so it stays a learner (the change in progress) for seconds, not for the instant
    # between its log catching up and the leader's next promotion round (once a second).
    c.preload(1500, 4)
    leader = c.leader()
    follower = random.choice(c.followers(leader))
    other = next(n for n in c.followers(leader) if n != follower)
    c.wait("the leader to compact its log (so a new node needs a snapshot)",
           lambda: (c.view(leader) or {}).get("purged_index") or 0, 90, every=0.2)
    before = c.voters_before_wipe(leader)
    old = before[follower][1]
    c.event("fault", f"node{follower} returns with an empty data directory: the leader replaces its old "
                     "incarnation in the membership")
    c.wipe(follower)
    c.recreate(follower)

    def changing():
        member = c.member(follower, leader) or {}
        return member.get("role") == "learner" and member.get("incarnation") not in (None, old)

    c.wait(f"the membership change to be under way (node{follower}'s old incarnation removed, its new one "
           "a learner)", changing, HEAL_DEADLINE, every=0.02)
    c.event("fault", f"SIGSTOP node{leader} (the leader) in the middle of the change")
    c.sigstop(leader)
    c.still_learner(follower, old, other, "the leader was frozen before it could promote the new incarnation")
    c.hold(3, "the leader stays frozen during the change")
    c.event("resume", f"SIGCONT node{leader}")
    c.sigcont(leader)
    c.leader()
    c.wait_rejoined(follower, before)
    c.wait_healed(f"the change completed; node{follower} is a voter; every node ready")


def kill_sample(c):
    c.event("fault", "kill -9 the sample1 container (a service; every router keeps running)")
    c.event("lease-loss-expected", "3 leases of sample1 run out while it is dead")
    c.kill_service("sample1")
    killed_at = time.time()

    def out_of_rotation():
        """No router lists a registration of sample1 passing (each is critical, or gone)."""
        for node in NODES:
            for namespace in ("urn:switchboard:samples", "http://tempuri.org/"):
                query = urllib.parse.urlencode({"health": "passing", "contract_namespace": namespace})
                page = c.get_json(f"{c.api(node)}/v1/registrations?{query}")
                if page is None or any(r.get("metadata", {}).get("instance") == "sample1"
                                       for r in page["registrations"]):
                    return False
        return True

    c.wait("sample1's registrations critical (or gone) on every router", out_of_rotation, 20, every=0.05)
    c.event("critical", f"sample1 out of every router's rotation {time.time() - killed_at:.2f} s after the kill")
    c.hold(3, "the routers route to sample2 alone")
    c.event("restart", "start the sample1 container: it registers again, passing")
    c.start_service("sample1")
    c.wait("the sample services registered on every node", c.samples_registered, HEAL_DEADLINE, every=0.2)
    c.wait_healed()


def kill_leader_large_state(c):
    # 20 MB of registrations (100 MB with SWITCHBOARD_FAILOVER_FULL=1), then the usual kill.
    megabytes = 100 if os.environ.get("SWITCHBOARD_FAILOVER_FULL") else 20
    c.preload(megabytes * 1024 // 15, 15, threads=4)
    leader = c.leader()
    c.event("fault", f"kill -9 node{leader} (the leader) holding {megabytes} MB of registrations")
    c.kill(leader)
    new = c.leader(exclude=(leader,))
    c.say(f"node{new} leads")
    c.event("restart", f"start node{leader}")
    c.start(leader)
    c.wait(f"node{leader} back", c.all_healthy, HEAL_DEADLINE, every=0.2)
    current = c.leader()
    victim = next(n for n in c.followers(current))
    before = c.voters_before_wipe(current)
    c.event("fault", f"node{victim} returns with an empty data directory: it catches up through a snapshot")
    c.wipe(victim)
    c.recreate(victim)
    c.wait_rejoined(victim, before)
    c.wait_healed(f"node{victim} caught up; every node ready")


# === what each scenario must meet ===
#
# check.py asserts every figure of every scenario against the bound written here, each with its
# reason (docs/failover.md shows them all). The compose cluster's Raft timing (docker-compose.yml):
# heartbeat 40 ms, election timeout 120-240 ms, leader lease 240 ms, so a dead leader is replaced
# 0.4-0.5 s after its last heartbeat, and a candidate campaigns at most once per 120 ms. The
# workload routes about 100 requests/s and probes the samples' leases 5 times a second. Timing
# bounds allow several times what the mechanism takes, so that a loaded 2-core machine meets them
# (the docker commands that inject and lift a fault take up to 3 s there), and still fail a write
# path stuck for ten seconds. "outage": the fault's own duration, from the last "fault" event to
# the harness's restart, resume or heal; "unavailability": the measured write unavailability.

LOAD = "times two or more for a loaded 2-core machine"
# An election may take several rounds (terms): candidates that campaign on the same 60 ms tick
# split the vote, and on a loaded machine a vote request can time out.
ROUNDS = 4


def writes_after_election(extra=""):
    return Bound(3000, "one election, 0.4-0.5 s after the leader's last heartbeat, a split vote or a rejoining "
                       f"node's campaign 0.2-0.5 s more{extra}; {LOAD}")


def writes_without_election():
    return Bound(3000, "the leader keeps its majority, so writes need no election, but the returning follower "
                       "may depose it (no pre-vote in openraft 0.9): one election at most; " + LOAD)


def first_ack(extra=""):
    return Bound(3000, "a write sent once the fault's command has returned waits at most for a new leader "
                       f"(0.4-0.5 s){extra}; {LOAD}")


def elections(forced, why):
    return Bound(forced * ROUNDS, f"{forced} forced ({why}), each up to {ROUNDS} rounds (split votes, vote "
                                  "requests timing out under load)")


# Routed requests failed. The rule: none, unless a router that serves the data plane is killed,
# frozen or cut off from the load balancer, and then at most the requests in flight on it. Every
# router that holds a replica caught up since it started stays in the load balancer's data backend
# (/health/ready?plane=data) through elections and quorum losses, so the others route everything
# else. HAProxy spreads the workload's 100 routed requests/s over the routers, a third each; it
# retries a request whose connection to a router fails on another router, and replays a GET (never
# a POST) whose connection closes without an answer. In flight on a router, per fault:
#   killed (SIGKILL, or a full disk that makes it exit): the POSTs it held when it died: a third of
#     100/s for up to 100 ms of answer time on a loaded machine is 3.3; 10 per router.
#   frozen (SIGSTOP): its kernel still accepts connections, so HAProxy hands it requests until two
#     checks time out (up to 1.2 s: 250 ms to the first, 400 ms timeout, 100 ms, 400 ms): a third of
#     100/s over 1.2 s is 40. They wait for it, and fail only if it stays frozen past the client's
#     12 s timeout or a timer of the router fires when it resumes.
#   cut off from the load balancer (network disconnect): new connections to it fail and are
#     retried on another router; the requests it held wait for the reconnection: 10, as for a kill.
PER_KILLED = 10
PER_FROZEN = 40
PER_CUT_OFF = 10


def routed_failures(killed=0, frozen=0, cut_off=0, extra=""):
    """The rule above, for a scenario that kills, freezes or cuts off these many data-plane
    routers (a wiped router is killed first)."""
    if not (killed or frozen or cut_off):
        return Bound(0, "no router that serves the data plane is killed, frozen or cut off from the load "
                        f"balancer, and every one keeps routing from its replica{extra}: nothing may fail")
    parts = []
    for count, per, what in ((killed, PER_KILLED, "killed"), (frozen, PER_FROZEN, "frozen"),
                             (cut_off, PER_CUT_OFF, "cut off from the load balancer")):
        if count:
            parts.append(f"{count} {what} × {per}")
    limit = killed * PER_KILLED + frozen * PER_FROZEN + cut_off * PER_CUT_OFF
    return Bound(limit, f"the requests in flight on the data-plane routers hit, {' + '.join(parts)}{extra}; the "
                        "others route everything else from their replicas")


PROBES_OK = Bound(20, "5 probes/s; the 2 s warm-up and the 3 s after healing alone give 25", at_least=True)


def probes_in_flight(kills):
    return Bound(2 * kills, f"a probe in flight on the router killed ({kills}x) hangs and times out; "
                            "2 per kill")


NO_CRITICAL = Bound(0, "no service is killed, so no endpoint turns critical: nothing may fail after such an event")

# A sample service killed: its registrations carry an http check of /health every second,
# critical after two failures of at most 500 ms each, confirmed by a second router's probe (500 ms
# more), then one Raft write: about 3 s from the kill to critical on every router, before the
# samples' 5 s lease runs out. Meanwhile the routers send it the requests they route to it (half of
# the workload's 100/s) over connections to an address that no longer answers: they fail.
CHECK_DETECTION_S = 1.0 * 2 + 0.5 + 0.5


class Scenario:
    """One scenario: the function that runs it, what it does, and the bounds check.py asserts.
    `data_plane_faults`: how many data-plane routers it kills, freezes and cuts off from the load
    balancer ({"killed": n, "frozen": n, "cut_off": n}); the routed-failure bound follows from them
    (routed_failures), except where no router runs at all (`no_router_runs`)."""

    def __init__(self, run, about, data_plane_faults=None, no_router_runs=False, **bounds):
        bounds.setdefault("routes_failed_after_critical", NO_CRITICAL)
        check.validate_bounds(bounds)
        self.run = run
        self.about = about
        self.data_plane_faults = data_plane_faults or {}
        self.no_router_runs = no_router_runs
        self.bounds = bounds


DOUBLE_FAULT_ELECTIONS = Bound(4, "a node campaigns again and again while no majority can form: at most "
                                  "2 campaigners, each once per 120 ms (the election timeout's lower bound), "
                                  "over the write unavailability; plus 4 for the elections around it",
                               unavailable=2 / 0.120)
NO_QUORUM_PROBES = ("no node is ready for the control API once no quorum has formed for 3 s: probes fail "
                    "for the outage (5/s) and until the nodes are back (8 s)")


def scenario(run, about, faults, **bounds):
    """A scenario whose routed-failure bound is the rule's for its data-plane faults."""
    extra = bounds.pop("routed_extra", "")
    return Scenario(run, about, data_plane_faults=faults, routes_failed=routed_failures(**faults, extra=extra),
                    **bounds)


SCENARIOS = {
    "kill-leader": scenario(
        kill_leader, "kill -9 of the leader, restart", {"killed": 1},
        write_unavailability_ms=writes_after_election(),
        first_ack_after_fault_ms=first_ack(),
        elections=elections(2, "the kill; the restarted node campaigns before it hears from the new leader and "
                               "deposes it"),
        lease_probes_failed=probes_in_flight(1),
        lease_probes_ok=PROBES_OK),
    "kill-follower": scenario(
        kill_follower, "kill -9 of a follower, restart", {"killed": 1},
        write_unavailability_ms=writes_without_election(),
        first_ack_after_fault_ms=first_ack(", which it seldom needs"),
        elections=elections(1, "the restarted follower may campaign before it hears from the leader"),
        lease_probes_failed=probes_in_flight(1),
        lease_probes_ok=PROBES_OK),
    "pause-leader": scenario(
        pause_leader, "SIGSTOP of the leader past the election timeout, SIGCONT", {"frozen": 1},
        routed_extra=" (frozen about 3 s, within the client's 12 s: it answers them when it resumes)",
        write_unavailability_ms=writes_after_election(),
        first_ack_after_fault_ms=first_ack(),
        elections=elections(2, "the pause; the resumed node, deposed, may campaign before it hears from the new "
                               "leader"),
        lease_probes_failed=Bound(2, "a probe sent to the frozen router waits for it (3 s) and is answered"),
        lease_probes_ok=PROBES_OK),
    "partition-leader-peers": scenario(
        partition_leader_peers, "leader's peer traffic dropped, load balancer still reaches it", {},
        routed_extra=" (the cut-off leader leaves the control API backend, not the data backend)",
        write_unavailability_ms=writes_after_election(),
        first_ack_after_fault_ms=first_ack(),
        elections=elections(2, "the cut; the healed node may campaign before it hears from the new leader"),
        lease_probes_failed=Bound(2, "the cut-off router answers reads from its replica: none should fail"),
        lease_probes_ok=PROBES_OK),
    "disconnect-node": scenario(
        disconnect_node, "full network disconnect of the leader, reconnect", {"cut_off": 1},
        routed_extra=" (they wait for the reconnection, same address, and are mostly answered)",
        write_unavailability_ms=writes_after_election(),
        first_ack_after_fault_ms=first_ack(),
        elections=elections(2, "the disconnect; the reconnected node may campaign before it hears from the new "
                               "leader"),
        lease_probes_failed=Bound(2, "a probe on the disconnected router waits for the reconnection; 2 for one "
                                     "that times out"),
        lease_probes_ok=PROBES_OK),
    "rolling-restart": scenario(
        rolling_restart, "graceful restart of all three, one at a time", {},
        routed_extra=(" (a stopping router fails both checks for --drain-ms, 1 s, longer than HAProxy takes to "
                      "take it out of both backends, before it closes its listeners and finishes what it holds)"),
        write_unavailability_ms=writes_after_election(" (the leader, restarted last, is replaced)"),
        first_ack_after_fault_ms=first_ack(),
        elections=elections(2, "the leader's restart; a restarted node may campaign before it hears from the "
                               "leader, which the drain makes rare"),
        lease_probes_failed=Bound(2, "draining routers finish their requests: none should fail"),
        lease_probes_ok=PROBES_OK),
    "kill-all": Scenario(
        kill_all, "kill -9 of all three nodes, restart", data_plane_faults={"killed": 3}, no_router_runs=True,
        write_unavailability_ms=Bound(6000, "no node runs for the outage; then three starts, boot, an election "
                                            "and HAProxy taking the nodes back (2 checks at 500 ms): about 2 s "
                                            "here; " + LOAD, outage=1000),
        first_ack_after_fault_ms=Bound(6000, "a write sent once every node is dead waits for the rest of the "
                                             "outage, the restart, an election and HAProxy (about 2 s); " + LOAD,
                                       outage=1000),
        elections=Bound(3, "one election after the restart, in which all three campaign at once and split the "
                           "vote again and again: at most 3 campaigners once per 120 ms over the write "
                           "unavailability, plus 3", unavailable=3 / 0.120),
        routes_failed=Bound(800, "no router runs, so beyond the requests in flight on the three killed (30) every "
                                 "routed request fails for the outage (100/s) and until a restarted router is back "
                                 "in the data backend, which needs it to catch up with an elected leader (2-4 s, "
                                 "8 s allowed)", outage=100),
        lease_probes_failed=Bound(40, "no router runs: every probe fails for the outage (5/s) and until the "
                                      "nodes are back (8 s)", outage=5),
        lease_probes_ok=PROBES_OK),
    "kill-two-routers": scenario(
        kill_two_routers, "kill -9 of a follower and the leader under load, the survivor alone for 8 s, restart",
        {"killed": 2},
        routed_extra=" (the follower, then the leader)",
        write_unavailability_ms=Bound(6000, "writes stop for the outage, by design (one voter of three left), "
                                            "then two starts, an election and HAProxy taking the nodes back: about "
                                            "2 s here; " + LOAD, outage=1000),
        first_ack_after_fault_ms=Bound(6000, "a write sent after the kills waits for the outage, the restarts, an "
                                             "election and HAProxy (about 2 s); " + LOAD, outage=1000),
        elections=Bound(4, "the survivor campaigns again and again while no majority can form: once per 120 ms "
                           "at most (the election timeout's lower bound) over the write unavailability; plus 4 for "
                           "the election after the restart", unavailable=1 / 0.120),
        lease_probes_failed=Bound(40, "the control API backend is empty once the survivor has known no leader for "
                                      "3 s: probes fail for the outage (5/s) and until the nodes are back (8 s)",
                                  outage=5),
        lease_probes_ok=PROBES_OK),
    "wipe-node": scenario(
        wipe_node, "follower comes back with an empty data directory, re-admitted", {"killed": 1},
        write_unavailability_ms=writes_without_election(),
        first_ack_after_fault_ms=first_ack(", which it seldom needs"),
        elections=elections(1, "a wiped node campaigns only once admitted; the re-admitted voter may campaign "
                               "before it hears from the leader"),
        lease_probes_failed=probes_in_flight(1),
        lease_probes_ok=PROBES_OK),
    "wipe-and-kill-leader": scenario(
        wipe_and_kill_leader, "follower cut off from its peers, leader killed, other follower wiped, reconnected",
        {"killed": 2},
        routed_extra=" (the leader and the wiped follower; the follower cut off from its peers keeps routing)",
        write_unavailability_ms=Bound(6000, "writes stop for the outage, by design (no majority of intact "
                                            "voters), then the restarted leader boots and wins an election: "
                                            "1.5-2 s here; " + LOAD, outage=1000),
        first_ack_after_fault_ms=Bound(6000, "a write sent after the kills waits for the outage, the restart "
                                             "and an election (1.5-2 s); " + LOAD, outage=1000),
        elections=Bound(46, "the cut-off follower campaigns alone while it is cut off (the 2 s hold and the kills, "
                            "up to 5 s: 42 at once per 120 ms); then a node campaigns again and again while no "
                            "majority can form: at most 2 campaigners, each once per 120 ms, over the write "
                            "unavailability; plus 4 for the elections around it", unavailable=2 / 0.120),
        lease_probes_failed=Bound(40, NO_QUORUM_PROBES, outage=5),
        lease_probes_ok=PROBES_OK),
    "kill-leader-during-snapshot-install": scenario(
        kill_leader_during_snapshot_install, "leader killed while a wiped follower installs a snapshot",
        {"killed": 2},
        routed_extra=" (the wiped follower, then the leader)",
        write_unavailability_ms=Bound(6000, "writes stop for the outage, by design (the learner cannot vote), "
                                            "then the restarted leader loads 6 MB and wins an election: "
                                            "1.5-2 s here; " + LOAD, outage=1000),
        first_ack_after_fault_ms=Bound(6000, "a write sent after the leader's kill waits for the outage, the "
                                             "restart and an election (1.5-2 s); " + LOAD, outage=1000),
        elections=DOUBLE_FAULT_ELECTIONS,
        lease_probes_failed=Bound(40, NO_QUORUM_PROBES, outage=5),
        lease_probes_ok=PROBES_OK),
    "disk-full-follower": scenario(
        disk_full_follower, "follower's disk fills up, then is freed", {"killed": 1},
        routed_extra=" (the full node exits)",
        write_unavailability_ms=writes_without_election(),
        first_ack_after_fault_ms=first_ack(", which it seldom needs"),
        elections=elections(1, "the restarted follower may campaign before it hears from the leader"),
        lease_probes_failed=probes_in_flight(1),
        lease_probes_ok=PROBES_OK),
    "pause-leader-during-membership-change": scenario(
        pause_leader_during_membership_change, "leader paused while a wiped follower is re-added",
        {"killed": 1, "frozen": 1},
        routed_extra=" (the wiped follower; the leader, frozen 3 s, answers its requests when it resumes)",
        write_unavailability_ms=Bound(6000, "writes stop for the outage (the leader frozen, the other voter "
                                            "alone: the new incarnation is a learner), then an election: "
                                            "under 1 s here; " + LOAD, outage=1000),
        first_ack_after_fault_ms=Bound(6000, "a write sent after the pause waits for the resume and an "
                                             "election; " + LOAD, outage=1000),
        elections=DOUBLE_FAULT_ELECTIONS,
        lease_probes_failed=Bound(40, NO_QUORUM_PROBES, outage=5),
        lease_probes_ok=PROBES_OK),
    "kill-sample": Scenario(
        kill_sample, "kill -9 of a sample service under load: critical on every router before its lease runs "
                     "out, then restarted",
        write_unavailability_ms=Bound(3000, "no router is touched, so writes need no election; " + LOAD),
        first_ack_after_fault_ms=Bound(3000, "no router is touched; " + LOAD),
        elections=Bound(0, "no router is touched: no election"),
        routes_failed=Bound(round(50 * (CHECK_DETECTION_S + 2)),
                            f"half of the workload's 100 routed requests/s go to the killed sample until every "
                            f"router lists it critical ({CHECK_DETECTION_S:g} s: two failed checks 1 s apart of at "
                            "most 500 ms, the second router's confirming probe, a write) and 2 s more on a loaded "
                            "machine; they fail, as its address no longer answers"),
        routes_failed_after_critical=Bound(0, "once every router lists the killed sample critical, none sends it "
                                              "a request, not even a retry"),
        lease_probes_failed=Bound(2, "no router is touched: every probe is answered"),
        lease_probes_ok=PROBES_OK),
    "kill-leader-large-state": scenario(
        kill_leader_large_state, "leader killed with 20 MB of registrations (100 MB in full mode), then a follower wiped and caught up",
        {"killed": 2},
        routed_extra=" (the leader, then the wiped follower)",
        write_unavailability_ms=writes_after_election(" (the wiped follower catches up from the leader without "
                                                      "stopping writes)"),
        first_ack_after_fault_ms=first_ack(),
        elections=elections(3, "the kill; the restarted node may depose the new leader; the wiped node, once "
                               "admitted, may campaign before it hears from the leader"),
        lease_probes_failed=probes_in_flight(2),
        lease_probes_ok=PROBES_OK),
}

# Settings of some scenarios, applied before the cluster starts.
SETUP = {
    # A short snapshot interval, so that a new node must catch up through a snapshot, sent in the
    # smallest chunks, so that its transfer (about 1,500 requests) outlasts the few seconds a
    # docker command takes to inject the fault on a loaded machine. Since a node keeps the log
    # after a snapshot it sends, the new node then catches up at once: with 4 MiB chunks it was
    # a voter again before the fault landed.
    "kill-leader-during-snapshot-install": lambda c: c.env.update(
        {"SWITCHBOARD_SNAPSHOT_EVERY": "100", "SWITCHBOARD_SNAPSHOT_CHUNK_KB": "4"}),
    "pause-leader-during-membership-change": lambda c: c.env.update(
        {"SWITCHBOARD_SNAPSHOT_EVERY": "100", "SWITCHBOARD_SNAPSHOT_CHUNK_KB": "4"}),
    "disk-full-follower": lambda c: c.small_disks(),
    "kill-leader-large-state": lambda c: c.env.update({"SWITCHBOARD_SNAPSHOT_EVERY": "100"}),
}


def interrupt(*_):
    raise KeyboardInterrupt


def run(name):
    scenario = SCENARIOS[name].run
    results = REPO / "target" / "failover" / name
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    scenario_began = time.time()
    c = Cluster(results)
    load = None
    result = None
    error = None
    # SIGTERM (run-all's timeout, CI cancelling) cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        if name in SETUP:
            SETUP[name](c)
        c.up()
        load = workload_mod.Workload(c.token, c.lb, results / "history.jsonl", f"{name}-{int(time.time())}",
                                     max_seconds=WORKLOAD_MAX_SECONDS).start()
        c.say("workload started")

        warm_from = time.time() + WARMUP_SECONDS

        def warm():
            counts = load.snapshot()
            return time.time() >= warm_from and counts["write_ok"] >= 40 and counts["route_ok"] >= 40

        c.wait(f"the workload to warm up ({WARMUP_SECONDS} s, 40 acknowledged writes, 40 routed requests)",
               warm, WARMUP_DEADLINE)
        scenario(c)
        acked_at_heal = load.snapshot()["write_ok"]
        c.wait("40 writes acknowledged after healing",
               lambda: load.snapshot()["write_ok"] >= acked_at_heal + 40, HEAL_DEADLINE)
        c.hold(POST_HEAL_SECONDS, "the workload keeps going on the healed cluster")
        c.say("stopping the workload")
        hanging = load.stop()
        load = None
        if hanging:
            raise ScenarioError(f"{hanging} workload operations did not finish")
        c.say("workload stopped; waiting for the nodes to agree")
        began = time.time()
        try:
            states = c.wait("all three nodes to hold the same registrations at the same applied index",
                            c.converged, CONVERGE_DEADLINE, every=0.25)
            converge_ms = round((time.time() - began) * 1000)
        except ScenarioError as err:
            c.say(str(err))
            states = {str(n): c.registrations(n) for n in NODES}
            states = {n: s for n, s in states.items() if s}
            converge_ms = None
        views = {str(n): c.view(n) for n in NODES}
        final = {"nodes": states, "expected_nodes": [str(n) for n in NODES], "convergence_ms": converge_ms,
                 "terms": {n: (v or {}).get("term") for n, v in views.items()},
                 "leader": next((v["leader_id"] for v in views.values() if v and v.get("leader_id")), None)}
        (results / "final-state.json").write_text(json.dumps(final) + "\n")
        result = check.check(results, SCENARIOS[name].bounds)
    except KeyboardInterrupt:
        error = "interrupted"
    except ScenarioError as err:
        error = str(err)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if load is not None:
            load.stop()
        c.lift_faults()
        try:
            c.save_logs()
        except Exception as err:
            c.say(f"could not save the container logs: {err}")
        try:
            c.down()
        except ScenarioError as err:
            c.say(f"teardown failed: {err}")
            error = error or str(err)
        c.release()
    if error:
        c.say(f"SCENARIO ERROR: {error}")
        (results / "result.json").write_text(json.dumps({"scenario": name, "passed": False, "verdict": "error",
                                                              "problems": [error]}) + "\n")
        return 1
    result["duration_s"] = round(time.time() - scenario_began, 1)
    (results / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    check.print_result(result)
    return 0 if result["passed"] else 1


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} SCENARIO\nscenarios:", file=sys.stderr)
        for name, scenario in SCENARIOS.items():
            print(f"  {name:24} {scenario.about}", file=sys.stderr)
        return 2
    return run(sys.argv[1])


if __name__ == "__main__":
    sys.exit(main())
