//! Active health checks, decided once for the cluster.
//!
//! Every registration whose effective check (its own, else its contract policy's, else the
//! cluster default) probes something is probed by exactly one node: the first of the
//! registration's rendezvous ranking over the probing members ([`Cluster::probers`]: the
//! committed members heard from lately). Every node computes the same ranking from the same
//! committed membership, so the assignment needs no messages, spreads evenly, and moves to the
//! next node of the ranking when a prober goes quiet.
//!
//! A prober keeps its counters as soft state and writes only transitions (`SetHealth`, with the
//! registration's epoch): critical after `fall` failures in a row, passing after `rise` successes.
//! Before a critical transition it asks the next node of the ranking to probe once
//! (`Confirm`); if that node reaches the endpoint, nothing is written and the endpoint is handed
//! to it for a while, so a prober cut off from the services marks none of them. While no leader is
//! known the prober keeps counting and holds its transitions. The leader removes registrations
//! critical for longer than their `deregister_after_ms`, at most `--deregister-max-per-minute`
//! per minute, counted from the committed audit trail.

pub mod probe;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use switchboard_proto::peer::Confirm;
use switchboard_proto::peer::ConfirmAnswer;
use switchboard_proto::peer::ConfirmRequest;
use switchboard_proto::peer::Handover;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::metrics::Confirmation;
use crate::metrics::METRICS;
use crate::metrics::ProbeResult;
use crate::metrics::Transition;
use crate::netpolicy::AddressPolicy;
use crate::raft::NodeId;
use crate::registry::Actor;
use crate::registry::AuditAction;
use crate::registry::Check;
use crate::registry::CheckKind;
use crate::registry::Command;
use crate::registry::ContractKey;
use crate::registry::EndpointState;
use crate::registry::HealthChange;
use crate::registry::HealthStatus;
use crate::registry::Lease;
use crate::registry::Outcome;
use crate::registry::Registration;
use crate::registry::RegistrationId;
use crate::registry::RegistryState;
use crate::registry::short_output;

/// How often the prober looks for due probes (a probe starts at most this late).
const TICK: Duration = Duration::from_millis(50);
/// How long a confirming peer may take beyond the check's timeout.
const CONFIRM_SLACK: Duration = Duration::from_millis(500);
/// How often the leader looks for registrations to deregister.
const DEREGISTER_EVERY: Duration = Duration::from_secs(1);
/// Confirmations a node asks of the others at once.
static CONFIRMS: Semaphore = Semaphore::const_new(64);
/// The shortest hand-over of an endpoint to the node that reached it.
const MIN_HANDOVER: Duration = Duration::from_secs(30);

/// The health checker's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The check of registrations that name none and whose contract policy names none.
    pub default_check: Check,
    /// Most probes in flight at once on this node.
    pub max_concurrent: usize,
    /// Most probes started per second on this node.
    pub max_per_second: u32,
    /// Most registrations the cluster removes by `deregister_after_ms` per minute.
    pub deregister_per_minute: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { default_check: Check::default(), max_concurrent: 512, max_per_second: 5_000, deregister_per_minute: 60 }
    }
}

/// The rank of `node` for registration `id`: the highest rank probes it.
fn score(id: &RegistrationId, node: NodeId) -> u64 {
    let bytes = id.as_bytes();
    let mut half = [0; 8];
    half.copy_from_slice(&bytes[..8]);
    mix(u64::from_le_bytes(half) ^ mix(node))
}

/// SplitMix64's finalizer: a fixed, well-spread mix, the same in every build.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `members` in the order they take `id` on: the first probes it, the second confirms.
pub fn ranking(id: &RegistrationId, members: &[NodeId]) -> Vec<NodeId> {
    let mut ranked = members.to_vec();
    ranked.sort_by_key(|node| (std::cmp::Reverse(score(id, *node)), *node));
    ranked
}

/// The node that probes `id` among `members`, if any.
pub fn prober_of(id: &RegistrationId, members: &[NodeId]) -> Option<NodeId> {
    members.iter().copied().max_by_key(|node| (score(id, *node), std::cmp::Reverse(*node)))
}

/// The active health checker of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cluster: Cluster,
    config: HealthConfig,
    probe: probe::Probe,
    soft: Mutex<Soft>,
    writing: AtomicBool,
    /// A deregistration round is out (one at a time, so the per-minute limit holds).
    deregistering: AtomicBool,
}

/// What a prober knows that is not committed: counters, hand-overs and transitions to write.
#[derive(Debug, Default)]
struct Soft {
    targets: HashMap<RegistrationId, Target>,
    /// Endpoints this node handed to another that reached them: until when, and to whom.
    handed: HashMap<RegistrationId, (Instant, NodeId)>,
    /// Endpoints another node handed to this one, until when.
    adopted: HashMap<RegistrationId, Instant>,
    /// Transitions decided and not yet written.
    pending: HashMap<RegistrationId, HealthChange>,
    /// What the assignment was computed from: the applied index and the members.
    assigned_from: Option<(u64, Vec<NodeId>, usize)>,
    /// This node's probes, failures and written transitions per contract, since it started.
    counts: HashMap<ContractKey, ContractCounts>,
}

/// What one node's checker did for one contract, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContractCounts {
    pub probes: u64,
    pub failures: u64,
    pub transitions: u64,
}

/// The soft state of one endpoint this node probes.
#[derive(Debug, Clone)]
struct Target {
    address: Arc<str>,
    contract: ContractKey,
    epoch: u64,
    check: Check,
    due: Instant,
    passes: u32,
    fails: u32,
    output: String,
    busy: bool,
    confirming: bool,
}

/// The result of one probe, back to the loop.
struct Probed {
    lease: Lease,
    result: Result<(), String>,
}

/// The result of a confirmation, back to the loop.
struct Confirmed {
    lease: Lease,
    output: String,
    answer: Option<(NodeId, ConfirmAnswer)>,
    /// A second node was there to ask (whether or not it answered).
    asked: bool,
}

enum Event {
    Probed(Probed),
    Confirmed(Confirmed),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Prober {
    pub fn new(cluster: Cluster, config: HealthConfig, policy: Arc<AddressPolicy>) -> Self {
        let probe = probe::Probe::new(policy, cluster.node_id());
        let inner = Inner {
            cluster,
            config,
            probe,
            soft: Mutex::default(),
            writing: AtomicBool::new(false),
            deregistering: AtomicBool::new(false),
        };
        Self { inner: Arc::new(inner) }
    }

    fn soft(&self) -> std::sync::MutexGuard<'_, Soft> {
        self.inner.soft.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster default check.
    pub fn default_check(&self) -> &Check {
        &self.inner.config.default_check
    }

    /// The node that probes `registration` now, as this node computes it (none if its check
    /// probes nothing): its ranked prober, or the node that prober handed it to, as this node's
    /// own hand-overs or the prober's last beat say.
    pub fn checked_by(&self, state: &RegistryState, registration: &Registration, members: &[NodeId]) -> Option<NodeId> {
        let check = state.effective_check(registration, &self.inner.config.default_check);
        if check.kind == CheckKind::None || registration.state != EndpointState::Active {
            return None;
        }
        let ranked = prober_of(&registration.id, members)?;
        let cluster = &self.inner.cluster;
        let handed = match ranked == cluster.node_id() {
            true => self.soft().handed.get(&registration.id).map(|(_, to)| *to),
            false => cluster.handed_over_by(ranked, &registration.id),
        };
        Some(handed.unwrap_or(ranked))
    }

    /// Tells the other members, in this node's beats, which endpoints it handed to whom.
    fn tell_handovers(&self, handed: &HashMap<RegistrationId, (Instant, NodeId)>) {
        let handed = handed.iter().map(|(id, (_, to))| Handover { id: *id, to: *to }).collect();
        self.inner.cluster.set_own_handovers(handed);
    }

    /// This node's probes, failures and written transitions for `contract`, since it started.
    pub fn counts(&self, contract: &ContractKey) -> ContractCounts {
        self.soft().counts.get(contract).copied().unwrap_or_default()
    }

    /// Runs the checker until `stop`: probing, confirming, writing transitions and, as leader,
    /// deregistering.
    pub async fn run(self, stop: CancellationToken) {
        let (events, mut inbox) = mpsc::channel::<Event>(4096);
        let permits = Arc::new(Semaphore::new(self.inner.config.max_concurrent.max(1)));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut budget = 0f64;
        let mut last = Instant::now();
        let mut next_deregister = Instant::now() + DEREGISTER_EVERY;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(event) = inbox.recv() => {
                    self.on_event(event, &events);
                    // A transition just decided is written now, not at the next tick.
                    self.flush();
                    continue;
                }
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let per_second = f64::from(self.inner.config.max_per_second.max(1));
            budget = (budget + now.saturating_duration_since(last).as_secs_f64() * per_second).min(per_second);
            last = now;
            self.assign(now);
            self.start_due(now, &mut budget, &permits, &events);
            self.flush();
            if now >= next_deregister {
                next_deregister = now + DEREGISTER_EVERY;
                if self.inner.cluster.is_leader() && !self.inner.deregistering.swap(true, Ordering::AcqRel) {
                    let prober = self.clone();
                    tokio::spawn(async move {
                        prober.deregister().await;
                        prober.inner.deregistering.store(false, Ordering::Release);
                    });
                }
            }
        }
    }

    /// Recomputes which endpoints this node probes, when the registry or the members changed.
    fn assign(&self, now: Instant) {
        let cluster = &self.inner.cluster;
        let applied = cluster.view().load();
        let members = cluster.probers();
        let me = cluster.node_id();
        let mut soft = self.soft();
        let handed = soft.handed.len();
        soft.handed.retain(|_, (until, _)| *until > now);
        if soft.handed.len() != handed {
            self.tell_handovers(&soft.handed);
        }
        soft.adopted.retain(|_, until| *until > now);
        let handovers = soft.handed.len() + soft.adopted.len();
        let key = (applied.index, members.clone(), handovers);
        if soft.assigned_from.as_ref() == Some(&key) {
            return;
        }
        soft.assigned_from = Some(key);
        let Soft { targets, handed, adopted, .. } = &mut *soft;
        // A node that is not ready (not caught up, or stopping) probes nothing; the others no
        // longer count it either (`Cluster::probers`).
        let ready = members.contains(&me);
        let mut assigned = HashMap::with_capacity(targets.len());
        for registration in applied.state.iter() {
            if registration.state != EndpointState::Active {
                continue;
            }
            let check = applied.state.effective_check(registration, &self.inner.config.default_check);
            if check.kind == CheckKind::None {
                continue;
            }
            let id = registration.id;
            let mine = ready
                && (adopted.contains_key(&id) || (prober_of(&id, &members) == Some(me) && !handed.contains_key(&id)));
            if !mine {
                continue;
            }
            let target = match targets.remove(&id) {
                // Same instance and check: the counters carry on.
                Some(target) if target.epoch == registration.epoch && &target.check == check => target,
                _ => Target {
                    address: Arc::from(registration.address.as_str()),
                    contract: registration.contract_key(),
                    epoch: registration.epoch,
                    check: check.clone(),
                    // Spread the first probes over one interval.
                    due: now + Duration::from_millis(spread(&id, check.interval_ms)),
                    passes: 0,
                    fails: 0,
                    output: String::new(),
                    busy: false,
                    confirming: false,
                },
            };
            assigned.insert(id, target);
        }
        *targets = assigned;
        METRICS.probed_endpoints.set(targets.len() as i64);
    }

    /// Starts the probes that are due, within the concurrency and rate limits.
    fn start_due(&self, now: Instant, budget: &mut f64, permits: &Arc<Semaphore>, events: &mpsc::Sender<Event>) {
        let mut soft = self.soft();
        let mut late = 0u64;
        for (id, target) in soft.targets.iter_mut() {
            if target.busy || target.due > now {
                continue;
            }
            if *budget < 1.0 {
                break;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else { break };
            *budget -= 1.0;
            let interval = Duration::from_millis(u64::from(target.check.interval_ms));
            if now.saturating_duration_since(target.due) > interval {
                late += 1;
            }
            target.busy = true;
            target.due = now + interval;
            let (probe, address, check) = (self.inner.probe.clone(), target.address.clone(), target.check.clone());
            let (events, lease) = (events.clone(), Lease { id: *id, epoch: target.epoch });
            tokio::spawn(async move {
                let started = Instant::now();
                let result = probe.run(&address, &check).await;
                METRICS.probe_latency.observe(started.elapsed());
                METRICS.probe(if result.is_ok() { ProbeResult::Passed } else { ProbeResult::Failed });
                drop(permit);
                let _ = events.send(Event::Probed(Probed { lease, result })).await;
            });
        }
        if late > 0 {
            METRICS.probes_late.add(late);
            static LATE: crate::telemetry::RateLimit = crate::telemetry::RateLimit::new(Duration::from_secs(30));
            if let Some(held_back) = LATE.check() {
                tracing::warn!(
                    late,
                    held_back,
                    max_concurrent = self.inner.config.max_concurrent,
                    max_per_second = self.inner.config.max_per_second,
                    "health probes start later than their interval: the probe limits cannot meet the configured intervals"
                );
            }
        }
    }

    fn on_event(&self, event: Event, events: &mpsc::Sender<Event>) {
        match event {
            Event::Probed(probed) => self.on_probed(probed, events),
            Event::Confirmed(confirmed) => self.on_confirmed(confirmed),
        }
    }

    /// The status a registration has, counting a transition not yet written.
    fn status(soft: &Soft, state: &RegistryState, id: &RegistrationId) -> HealthStatus {
        soft.pending.get(id).map_or_else(|| state.health_status(id), |pending| pending.status)
    }

    fn on_probed(&self, Probed { lease, result }: Probed, events: &mpsc::Sender<Event>) {
        let applied = self.inner.cluster.view().load();
        let me = self.inner.cluster.node_id();
        let mut soft = self.soft();
        let status = Self::status(&soft, &applied.state, &lease.id);
        let Some(target) = soft.targets.get_mut(&lease.id).filter(|t| t.epoch == lease.epoch) else { return };
        target.busy = false;
        let passed = result.is_ok();
        let contract = target.contract.clone();
        match result {
            Ok(()) => (target.passes, target.fails) = (target.passes.saturating_add(1), 0),
            Err(output) => (target.passes, target.fails, target.output) = (0, target.fails.saturating_add(1), output),
        }
        let counts = soft.counts.entry(contract).or_default();
        counts.probes += 1;
        counts.failures += u64::from(!passed);
        // A transition not written yet that the latest probe contradicts is dropped: a prober
        // that could not write for a while never writes what is no longer true.
        let contradicted = match soft.pending.get(&lease.id).map(|p| p.status) {
            Some(HealthStatus::Critical) => passed,
            Some(HealthStatus::Passing) => !passed,
            None => false,
        };
        if contradicted {
            soft.pending.remove(&lease.id);
            return;
        }
        let Some(target) = soft.targets.get_mut(&lease.id) else { return };
        if status == HealthStatus::Passing && target.fails >= target.check.fall && !target.confirming {
            target.confirming = true;
            let output = target.output.clone();
            let (check, address) = (target.check.clone(), target.address.clone());
            let members = self.inner.cluster.probers();
            let second = ranking(&lease.id, &members).into_iter().find(|node| *node != me);
            let (cluster, events) = (self.inner.cluster.clone(), events.clone());
            tracing::debug!(id = %lease.id, %address, ?second, "endpoint failing; asking a second node to confirm");
            tokio::spawn(async move {
                // Many endpoints failing at once (a rack) ask for their second probes a few at a
                // time, not all at once.
                let _permit = CONFIRMS.acquire().await;
                let timeout = Duration::from_millis(u64::from(check.timeout_ms)) + CONFIRM_SLACK;
                let answer = match second {
                    Some(node) => cluster
                        .call_member::<Confirm>(node, &ConfirmRequest { lease, adopt: true }, timeout)
                        .await
                        .ok()
                        .map(|answer| (node, answer)),
                    None => None,
                };
                let asked = second.is_some();
                let _ = events.send(Event::Confirmed(Confirmed { lease, output, answer, asked })).await;
            });
        } else if status == HealthStatus::Critical && target.passes >= target.check.rise {
            let change = HealthChange { lease, status: HealthStatus::Passing, output: String::new(), by: me };
            soft.pending.insert(lease.id, change);
        }
    }

    fn on_confirmed(&self, Confirmed { lease, output, answer, asked }: Confirmed) {
        let me = self.inner.cluster.node_id();
        let mut soft = self.soft();
        let Some(target) = soft.targets.get_mut(&lease.id).filter(|t| t.epoch == lease.epoch) else { return };
        target.confirming = false;
        let interval = Duration::from_millis(u64::from(target.check.interval_ms));
        let address = target.address.clone();
        match answer {
            Some((node, ConfirmAnswer::Reached)) => {
                METRICS.confirmation(Confirmation::Reached);
                tracing::warn!(
                    id = %lease.id,
                    %address,
                    reached_by = node,
                    %output,
                    "this node's probes fail but another node reaches the endpoint: nothing marked, the endpoint handed over"
                );
                soft.targets.remove(&lease.id);
                soft.handed.insert(lease.id, (Instant::now() + MIN_HANDOVER.max(interval * 10), node));
                self.tell_handovers(&soft.handed);
            }
            Some((node, ConfirmAnswer::Failed(second))) => {
                METRICS.confirmation(Confirmation::Confirmed);
                tracing::debug!(id = %lease.id, %address, confirmed_by = node, %output, "endpoint critical");
                let change =
                    HealthChange { lease, status: HealthStatus::Critical, output: short_output(&output), by: me };
                tracing::debug!(second = %second, "confirming probe output");
                soft.pending.insert(lease.id, change);
            }
            Some((_, ConfirmAnswer::Unknown)) | None if !asked => {
                // No other member to ask (a single node, or the only one heard from): this
                // node's probes decide.
                METRICS.confirmation(Confirmation::Unavailable);
                tracing::debug!(id = %lease.id, %address, %output, "endpoint critical (no second node to confirm)");
                let change =
                    HealthChange { lease, status: HealthStatus::Critical, output: short_output(&output), by: me };
                soft.pending.insert(lease.id, change);
            }
            Some((node, ConfirmAnswer::Unknown)) => {
                // The second node does not know this registration yet: count afresh, ask again.
                METRICS.confirmation(Confirmation::Unavailable);
                tracing::debug!(id = %lease.id, node, "the confirming node does not know the registration yet");
                target.fails = 0;
            }
            None => {
                // The second node could not be asked: this node may be the one cut off. Nothing is
                // written; it counts afresh and asks again.
                METRICS.confirmation(Confirmation::Unavailable);
                tracing::debug!(id = %lease.id, %address, "no second node answered; nothing marked, counting again");
                target.fails = 0;
            }
        }
    }

    /// Writes the pending transitions as one command, if a leader is known and no write is out.
    fn flush(&self) {
        if self.soft().pending.is_empty()
            || !self.inner.cluster.leader_known()
            || self.inner.writing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let changes: Vec<HealthChange> = {
            let applied = self.inner.cluster.view().load();
            let mut soft = self.soft();
            // A transition the registry already shows (or whose registration changed) is done.
            soft.pending.retain(|id, change| {
                let current = applied.state.get(id).map(|r| r.epoch);
                current == Some(change.lease.epoch) && applied.state.health_status(id) != change.status
            });
            soft.pending.values().cloned().collect()
        };
        if changes.is_empty() {
            self.inner.writing.store(false, Ordering::Release);
            return;
        }
        let prober = self.clone();
        tokio::spawn(async move {
            let count = changes.len();
            let result =
                prober.inner.cluster.write(Command::SetHealth(changes.clone()), &Actor::internal("health-check")).await;
            match result {
                Ok(Outcome::HealthSet(applied)) => {
                    let view = prober.inner.cluster.view().load();
                    let mut soft = prober.soft();
                    for change in changes.iter().filter(|c| applied.contains(&c.lease.id)) {
                        let transition = match change.status {
                            HealthStatus::Critical => Transition::Critical,
                            HealthStatus::Passing => Transition::Passing,
                        };
                        METRICS.transition(transition, 1);
                        if let Some(registration) = view.state.get(&change.lease.id) {
                            soft.counts.entry(registration.contract_key()).or_default().transitions += 1;
                        }
                    }
                    for change in &changes {
                        if soft.pending.get(&change.lease.id) == Some(change) {
                            soft.pending.remove(&change.lease.id);
                        }
                    }
                    // One line per write, however many endpoints it names (a rack that dies at
                    // once is one line); each endpoint's transition is at debug level.
                    let critical = changes.iter().filter(|c| c.status == HealthStatus::Critical).count();
                    let examples: Vec<&str> = changes
                        .iter()
                        .filter_map(|c| view.state.get(&c.lease.id).map(|r| r.address.as_str()))
                        .take(3)
                        .collect();
                    tracing::info!(
                        critical,
                        passing = count - critical,
                        applied = applied.len(),
                        ?examples,
                        "health transitions written"
                    );
                }
                Ok(other) => tracing::warn!(?other, "unexpected outcome of a health transition"),
                Err(err) => tracing::info!(error = %err, count, "health transitions not written yet; retrying"),
            }
            prober.inner.writing.store(false, Ordering::Release);
        });
    }

    /// Leader: removes registrations critical for longer than their `deregister_after_ms`, at
    /// most the configured number per minute across the cluster (counted in the audit trail).
    async fn deregister(&self) {
        let now = now_ms();
        let leases = {
            let applied = self.inner.cluster.view().load();
            let state = &applied.state;
            let minute_ago = now.saturating_sub(60_000);
            let recent = state
                .audit()
                .rev()
                .take_while(|record| record.at_ms >= minute_ago)
                .filter(|record| record.action == AuditAction::Deregistered)
                .count();
            let budget = (self.inner.config.deregister_per_minute as usize).saturating_sub(recent);
            let mut due: Vec<(u64, Lease)> = state
                .health_entries()
                .filter_map(|(id, entry)| {
                    let health = entry.health.as_ref().filter(|h| h.status == HealthStatus::Critical)?;
                    let registration = state.get(id)?;
                    let after =
                        state.effective_check(registration, &self.inner.config.default_check).deregister_after_ms?;
                    (now.saturating_sub(health.since_ms) >= after).then_some((health.since_ms, registration.lease()))
                })
                .collect();
            if due.len() > budget {
                static HELD: crate::telemetry::RateLimit = crate::telemetry::RateLimit::new(Duration::from_secs(30));
                if let Some(held_back) = HELD.check() {
                    tracing::warn!(
                        due = due.len(),
                        budget,
                        held_back,
                        "deregistrations held back by --deregister-max-per-minute"
                    );
                }
            }
            due.sort_unstable_by_key(|(since, _)| *since);
            due.into_iter().take(budget).map(|(_, lease)| lease).collect::<Vec<_>>()
        };
        if leases.is_empty() {
            return;
        }
        let actor = Actor::internal("health-check");
        match self.inner.cluster.write(Command::Deregister(leases), &actor).await {
            Ok(Outcome::Deregistered(ids)) if !ids.is_empty() => {
                METRICS.deregistered.add(ids.len() as u64);
                tracing::info!(removed = ids.len(), "critical registrations deregistered after deregister_after_ms");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "deregistering critical registrations failed; the next round decides again")
            }
        }
    }

    /// Answers another node's request to probe an endpoint once; adopts it when it answers and
    /// the asker wants that.
    pub async fn confirm(&self, request: &ConfirmRequest) -> ConfirmAnswer {
        let (address, check) = {
            let applied = self.inner.cluster.view().load();
            let Some(registration) = applied.state.get(&request.lease.id).filter(|r| r.epoch == request.lease.epoch)
            else {
                return ConfirmAnswer::Unknown;
            };
            let check = applied.state.effective_check(registration, &self.inner.config.default_check).clone();
            (registration.address.to_string(), check)
        };
        match self.inner.probe.run(&address, &check).await {
            Ok(()) => {
                if request.adopt {
                    let interval = Duration::from_millis(u64::from(check.interval_ms));
                    self.soft().adopted.insert(request.lease.id, Instant::now() + MIN_HANDOVER.max(interval * 10));
                }
                ConfirmAnswer::Reached
            }
            Err(output) => ConfirmAnswer::Failed(short_output(&output)),
        }
    }
}

/// Where in its interval an endpoint's first probe falls, from its id: probes of many endpoints
/// spread over the interval instead of starting together.
fn spread(id: &RegistrationId, interval_ms: u32) -> u64 {
    mix(u64::from_le_bytes(id.as_bytes()[8..].try_into().unwrap_or_default())) % u64::from(interval_ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<RegistrationId> {
        (0..n).map(|i| RegistrationId::of(&format!("http://10.0.0.1:{}/", 1000 + i), "urn:x", "C")).collect()
    }

    #[test]
    fn every_node_computes_the_same_prober_and_the_load_spreads_evenly() {
        let members = [1, 2, 3];
        let mut per_node = HashMap::new();
        for id in ids(3_000) {
            let prober = prober_of(&id, &members).unwrap();
            let mut shuffled = members;
            shuffled.reverse();
            assert_eq!(prober_of(&id, &shuffled), Some(prober), "the order of the members does not matter");
            assert_eq!(ranking(&id, &members)[0], prober);
            *per_node.entry(prober).or_insert(0) += 1;
        }
        for node in members {
            let share = per_node[&node];
            assert!((850..=1150).contains(&share), "node {node} probes {share} of 3000: {per_node:?}");
        }
    }

    #[test]
    fn when_a_prober_leaves_only_its_endpoints_move_and_they_go_to_the_next_in_their_ranking() {
        let all = [1, 2, 3];
        let without_2 = [1, 3];
        for id in ids(1_000) {
            let before = prober_of(&id, &all).unwrap();
            let after = prober_of(&id, &without_2).unwrap();
            if before == 2 {
                assert_eq!(after, ranking(&id, &all)[1], "the next in the ranking takes it over");
            } else {
                assert_eq!(after, before, "an endpoint of a node that stays does not move");
            }
        }
        assert_eq!(prober_of(&ids(1)[0], &[]), None);
    }

    #[test]
    fn the_first_probes_spread_over_the_interval() {
        let offsets: Vec<u64> = ids(1_000).iter().map(|id| spread(id, 1_000)).collect();
        assert!(offsets.iter().all(|o| *o < 1_000));
        let early = offsets.iter().filter(|o| **o < 500).count();
        assert!((400..=600).contains(&early), "{early} of 1000 in the first half");
    }
}
