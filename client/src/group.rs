//! Consumer-group membership (the KIP-848 consumer protocol): a background task heartbeats to
//! the group's coordinator, learns the partitions the broker assigns this member, and confirms
//! what the consumer owns. The consumer applies assignments in `poll`, between batches of
//! records, so a partition is never read after it has been given up.
//!
//! Call order: the consumer sets `owned` after it has applied a target; the task reports
//! `owned` in every heartbeat, which is how the broker learns that revoked partitions were let
//! go and may be handed to their new owners.
//!
//! Fencing: when the broker says this member is unknown or its epoch is fenced, the task marks
//! the partitions `lost` and stops heartbeating. Until the consumer has dropped them (in
//! `poll`), the member keeps its old id and epoch, so any commit made meanwhile carries the old
//! identity and the broker refuses it; only then does the task rejoin with epoch 0. A commit of
//! positions read before the fencing can therefore never be accepted under the new epoch.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_proto::api::group::{
    ConsumerGroupHeartbeatRequest, CoordinatorType, FindCoordinatorRequest, JOIN_EPOCH,
    LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use quiver_proto::api::TopicPartitions;
use quiver_proto::{BrokerId, ErrorCode, PartitionId};
use rand::RngCore;
use regex::Regex;
use tokio::sync::Notify;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::grouping::by_topic;
use crate::record::TopicPartition;

/// What a member subscribes to.
#[derive(Clone, Debug)]
pub(crate) enum Subscription {
    Topics(Vec<String>),
    /// Every non-internal topic whose whole name matches; re-listed every `metadata_max_age`.
    Pattern(Regex),
}

/// Everything a member is started with.
pub(crate) struct MemberOptions {
    pub(crate) group_id: String,
    pub(crate) subscription: Subscription,
    pub(crate) instance_id: Option<String>,
    pub(crate) assignor: Option<String>,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) retry_backoff: Duration,
    pub(crate) metadata_max_age: Duration,
}

pub(crate) struct Membership {
    pub(crate) shared: Arc<GroupShared>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct GroupShared {
    client: Client,
    pub(crate) group_id: String,
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    assignor: Option<String>,
    rebalance_timeout: Duration,
    retry_backoff: Duration,
    metadata_max_age: Duration,
    pub(crate) state: Mutex<GroupState>,
    pub(crate) nudge: Notify,
    /// Signalled when the task has sent its leave heartbeat.
    left: Notify,
}

pub(crate) struct GroupState {
    pub(crate) epoch: i32,
    subscription: Subscription,
    /// The topics subscribed to now (a pattern's matches, resolved by the task).
    pub(crate) subscribed: Vec<String>,
    send_subscription: bool,
    /// When a pattern subscription last listed the topics.
    pattern_listed: Option<Instant>,
    /// The assignment the broker gave last; the consumer applies it when it differs from
    /// what it owns.
    pub(crate) target: BTreeSet<TopicPartition>,
    /// What the consumer holds now, reported in every heartbeat.
    pub(crate) owned: BTreeSet<TopicPartition>,
    /// The member was fenced while owning partitions: they are no longer its own, and the
    /// consumer must drop them (without committing) before the task rejoins.
    pub(crate) lost: bool,
    /// Grows each time the member is fenced. A commit captured under one generation is never
    /// retried with the epoch of another.
    pub(crate) generation: u64,
    interval: Duration,
    /// An error no retry can fix (bad group id, unknown assignor, ...): poll returns it.
    pub(crate) fatal: Option<Error>,
    leaving: bool,
    done: bool,
    coordinator: Option<BrokerId>,
}

/// Who a commit is from, captured together with the offsets it commits.
#[derive(Clone)]
pub(crate) struct CommitIdentity {
    pub(crate) member_id: String,
    pub(crate) epoch: i32,
    pub(crate) instance_id: Option<String>,
    pub(crate) generation: u64,
    pub(crate) shared: Arc<GroupShared>,
}

impl CommitIdentity {
    /// The member's epoch now, if it is still the same incarnation that owned the partitions
    /// when the commit was captured (a commit refused as stale may then be sent again).
    pub(crate) fn current_epoch(&self) -> Option<i32> {
        let st = self.shared.state.lock().expect("not poisoned");
        (!st.lost && st.generation == self.generation && st.epoch > 0).then_some(st.epoch)
    }
}

impl Membership {
    pub(crate) fn start(client: Client, options: MemberOptions) -> Membership {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let member_id = quiver_proto::api::Uuid(u128::from_be_bytes(id)).to_string();
        let subscribed = match &options.subscription {
            Subscription::Topics(t) => t.clone(),
            Subscription::Pattern(_) => Vec::new(),
        };
        let shared = Arc::new(GroupShared {
            client,
            group_id: options.group_id,
            member_id,
            instance_id: options.instance_id,
            assignor: options.assignor,
            rebalance_timeout: options.rebalance_timeout,
            retry_backoff: options.retry_backoff,
            metadata_max_age: options.metadata_max_age,
            state: Mutex::new(GroupState {
                epoch: JOIN_EPOCH,
                subscription: options.subscription,
                subscribed,
                send_subscription: true,
                pattern_listed: None,
                target: BTreeSet::new(),
                owned: BTreeSet::new(),
                lost: false,
                generation: 0,
                interval: Duration::from_secs(3),
                fatal: None,
                leaving: false,
                done: false,
                coordinator: None,
            }),
            nudge: Notify::new(),
            left: Notify::new(),
        });
        let task = tokio::spawn(heartbeat_loop(shared.clone()));
        Membership { shared, task }
    }

    pub(crate) fn set_subscription(&self, subscription: Subscription) {
        let mut st = self.shared.state.lock().expect("not poisoned");
        if let Subscription::Topics(t) = &subscription {
            st.subscribed = t.clone();
        }
        st.subscription = subscription;
        st.pattern_listed = None;
        st.send_subscription = true;
        drop(st);
        self.shared.nudge.notify_one();
    }

    /// Leaves the group and waits (at most `timeout`) until the broker has been told.
    pub(crate) async fn leave(&self, timeout: Duration) {
        let notified = self.shared.left.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut st = self.shared.state.lock().expect("not poisoned");
            if st.done {
                return;
            }
            st.leaving = true;
        }
        self.shared.nudge.notify_one();
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// Who commits now: the member id and epoch under which the consumer holds its partitions.
    pub(crate) fn commit_identity(&self) -> CommitIdentity {
        let st = self.shared.state.lock().expect("not poisoned");
        CommitIdentity {
            member_id: self.shared.member_id.clone(),
            epoch: st.epoch,
            instance_id: self.shared.instance_id.clone(),
            generation: st.generation,
            shared: self.shared.clone(),
        }
    }

    /// The topics subscribed to now.
    pub(crate) fn subscribed(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .expect("not poisoned")
            .subscribed
            .clone()
    }
}

impl Drop for Membership {
    /// A consumer dropped without `close` (an early `?` return): the leave is sent at once
    /// from a task of its own, best effort and without blocking the drop, so the group hands
    /// the partitions on now rather than at the session timeout. The heartbeat task stops (it
    /// may be waiting on a heartbeat's answer, up to the request timeout).
    fn drop(&mut self) {
        self.task.abort();
        {
            let mut st = self.shared.state.lock().expect("not poisoned");
            if st.done {
                return;
            }
            st.leaving = true;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(leave_now(self.shared.clone()));
            }
            Err(_) => tracing::warn!(
                group = %self.shared.group_id,
                "a group member was dropped outside a tokio runtime without close(): the group \
                 frees its partitions only at the session timeout"
            ),
        }
    }
}

/// Sends the leave heartbeat (if the member joined) and marks the membership done.
async fn leave_now(shared: Arc<GroupShared>) {
    let req = {
        let st = shared.state.lock().expect("not poisoned");
        (st.epoch != JOIN_EPOCH && !st.done).then(|| heartbeat_request(&shared, &st))
    };
    if let Some(req) = req {
        let sent = async {
            let c = coordinator(&shared).await?;
            shared.client.call_broker(c, &req, Vec::new()).await
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, sent).await {
            Ok(Ok(_)) => tracing::debug!(group = %shared.group_id, "left the group on drop"),
            Ok(Err(e)) => {
                tracing::debug!(group = %shared.group_id, error = %e, "leave on drop failed")
            }
            Err(_) => tracing::debug!(group = %shared.group_id, "leave on drop timed out"),
        }
    }
    finish(&shared);
}

/// How long a dropped member's leave may take before it is given up (the session timeout
/// then frees its partitions).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The heartbeat to send now: a leave if `st.leaving` (epoch -1, or -2 for a static member,
/// which will be back), else the member's epoch with what it owns.
fn heartbeat_request(shared: &GroupShared, st: &GroupState) -> ConsumerGroupHeartbeatRequest {
    let joining = st.epoch == JOIN_EPOCH;
    let leave_epoch = if shared.instance_id.is_some() {
        STATIC_LEAVE_EPOCH
    } else {
        LEAVE_EPOCH
    };
    ConsumerGroupHeartbeatRequest {
        group_id: shared.group_id.clone(),
        member_id: shared.member_id.clone(),
        member_epoch: if st.leaving { leave_epoch } else { st.epoch },
        instance_id: shared.instance_id.clone(),
        rack_id: None,
        rebalance_timeout_ms: joining.then(|| {
            shared
                .rebalance_timeout
                .as_millis()
                .min(u128::from(u32::MAX)) as u32
        }),
        subscribed_topic_names: (joining || st.send_subscription).then(|| st.subscribed.clone()),
        server_assignor: if joining {
            shared.assignor.clone()
        } else {
            None
        },
        topic_partitions: Some(wire_partitions(&st.owned)),
    }
}

fn wire_partitions(tps: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let parts = tps.iter().map(|tp| (&tp.topic, tp.partition));
    by_topic(parts, |topic, partitions| TopicPartitions {
        topic: topic.clone(),
        partitions,
    })
}

async fn coordinator(shared: &GroupShared) -> Result<BrokerId> {
    if let Some(c) = shared.state.lock().expect("not poisoned").coordinator {
        return Ok(c);
    }
    let c = find_coordinator(&shared.client, &shared.group_id).await?;
    shared.state.lock().expect("not poisoned").coordinator = Some(c);
    Ok(c)
}

/// The broker coordinating `group`.
pub(crate) async fn find_coordinator(client: &Client, group: &str) -> Result<BrokerId> {
    client
        .require(
            quiver_proto::api::ApiKey::FindCoordinator,
            "finding the group coordinator",
        )
        .await?;
    let req = FindCoordinatorRequest {
        key_type: CoordinatorType::Group,
        keys: vec![group.to_string()],
    };
    let (resp, _) = client.call_any(&req, Vec::new()).await?;
    let c = resp
        .coordinators
        .into_iter()
        .find(|c| c.key == group)
        .ok_or_else(|| Error::Protocol(format!("no coordinator answer for group '{group}'")))?;
    if c.error_code != ErrorCode::None {
        return Err(Error::broker(c.error_code, c.error_message));
    }
    Ok(c.node_id)
}

/// Lists the topics again if a pattern subscription is due; updates `subscribed` when the
/// matches changed. Returns an error only to be logged (the next turn tries again).
async fn refresh_pattern(shared: &GroupShared) -> Result<()> {
    let pattern = {
        let st = shared.state.lock().expect("not poisoned");
        match &st.subscription {
            Subscription::Pattern(re)
                if st
                    .pattern_listed
                    .is_none_or(|t| t.elapsed() >= shared.metadata_max_age) =>
            {
                re.clone()
            }
            _ => return Ok(()),
        }
    };
    let names = shared.client.topic_names().await?;
    let matched: Vec<String> = names.into_iter().filter(|n| pattern.is_match(n)).collect();
    let mut st = shared.state.lock().expect("not poisoned");
    st.pattern_listed = Some(Instant::now());
    // The subscription may have changed while the topics were listed.
    let same =
        matches!(&st.subscription, Subscription::Pattern(re) if re.as_str() == pattern.as_str());
    if same && matched != st.subscribed {
        tracing::debug!(group = %shared.group_id, topics = ?matched, "pattern subscription changed");
        st.subscribed = matched;
        st.send_subscription = true;
    }
    Ok(())
}

async fn heartbeat_loop(shared: Arc<GroupShared>) {
    let mut failures = 0u32;
    loop {
        if let Err(e) = refresh_pattern(&shared).await {
            tracing::debug!(group = %shared.group_id, error = %e, "listing topics for the pattern subscription failed");
        }
        // What to do this turn: send a heartbeat, or wait (fenced and waiting for the
        // consumer, or a pattern that matches nothing yet), or stop.
        let step = {
            let mut st = shared.state.lock().expect("not poisoned");
            let joining = st.epoch == JOIN_EPOCH;
            if st.leaving && joining {
                // Never joined: nothing to leave.
                Step::Finish
            } else if st.lost && !st.leaving {
                Step::Wait(st.interval)
            } else if joining && st.subscribed.is_empty() {
                // A pattern that matches no topic yet: a join must name at least one.
                Step::Wait(shared.metadata_max_age.min(Duration::from_secs(1)))
            } else {
                let req = heartbeat_request(&shared, &st);
                st.send_subscription = false;
                Step::Send(Box::new(req), st.leaving)
            }
        };
        let (req, leaving) = match step {
            Step::Finish => {
                finish(&shared);
                return;
            }
            Step::Wait(d) => {
                let _ = tokio::time::timeout(d, shared.nudge.notified()).await;
                continue;
            }
            Step::Send(req, leaving) => (req, leaving),
        };
        let result = match coordinator(&shared).await {
            Ok(c) => shared.client.call_broker(c, &*req, Vec::new()).await,
            Err(e) => Err(e),
        };
        if leaving {
            if let Err(e) = &result {
                tracing::debug!(group = %shared.group_id, error = %e, "leave heartbeat failed");
            }
            finish(&shared);
            return;
        }
        let mut wait = {
            let st = shared.state.lock().expect("not poisoned");
            st.interval
        };
        match result {
            Ok((resp, _)) if resp.error_code == ErrorCode::None => {
                failures = 0;
                let mut st = shared.state.lock().expect("not poisoned");
                st.epoch = resp.member_epoch;
                if resp.heartbeat_interval_ms > 0 {
                    st.interval = Duration::from_millis(u64::from(resp.heartbeat_interval_ms));
                    wait = st.interval;
                }
                if let Some(a) = resp.assignment {
                    st.target = a
                        .topic_partitions
                        .iter()
                        .flat_map(|t| {
                            t.partitions
                                .iter()
                                .map(|p: &PartitionId| TopicPartition::new(&t.topic, p.0))
                        })
                        .collect();
                    tracing::debug!(group = %shared.group_id, epoch = st.epoch, target = ?st.target, "new assignment");
                }
                // A target the consumer has not applied yet: look again soon, so the broker
                // hears that revoked partitions are free without waiting a whole interval.
                if st.target != st.owned {
                    wait = wait.min(Duration::from_millis(200));
                }
            }
            Ok((resp, _)) => {
                let code = resp.error_code;
                let e = Error::broker(code, resp.error_message);
                let mut st = shared.state.lock().expect("not poisoned");
                match code {
                    ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId => {
                        st.generation += 1;
                        st.target = BTreeSet::new();
                        if st.owned.is_empty() {
                            // Nothing held, nothing to give up: join again at once.
                            tracing::info!(group = %shared.group_id, error = %e, "rejoining the group");
                            st.epoch = JOIN_EPOCH;
                            st.send_subscription = true;
                            wait = Duration::ZERO;
                        } else {
                            // The consumer drops its partitions in its next poll, then nudges.
                            tracing::info!(group = %shared.group_id, error = %e, "fenced: partitions lost; rejoining once the consumer lets them go");
                            st.lost = true;
                        }
                    }
                    ErrorCode::NotCoordinator
                    | ErrorCode::CoordinatorNotAvailable
                    | ErrorCode::CoordinatorLoadInProgress => {
                        st.coordinator = None;
                        failures += 1;
                        wait = backoff(shared.retry_backoff, failures);
                    }
                    c if c.is_retriable() => {
                        failures += 1;
                        wait = backoff(shared.retry_backoff, failures);
                    }
                    _ => {
                        tracing::warn!(group = %shared.group_id, error = %e, "group membership failed");
                        st.fatal = Some(e);
                        failures += 1;
                        wait = backoff(shared.retry_backoff, failures).max(Duration::from_secs(1));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(group = %shared.group_id, error = %e, "heartbeat failed");
                let mut st = shared.state.lock().expect("not poisoned");
                if !e.is_retriable() {
                    st.fatal = Some(e);
                }
                st.coordinator = None;
                failures += 1;
                wait = backoff(shared.retry_backoff, failures);
            }
        }
        let _ = tokio::time::timeout(wait, shared.nudge.notified()).await;
    }
}

enum Step {
    Finish,
    Wait(Duration),
    Send(Box<ConsumerGroupHeartbeatRequest>, bool),
}

fn finish(shared: &GroupShared) {
    let mut st = shared.state.lock().expect("not poisoned");
    st.done = true;
    st.epoch = LEAVE_EPOCH;
    drop(st);
    shared.left.notify_waiters();
}

pub(crate) fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.min(5))
        .min(Duration::from_secs(2))
}

pub(crate) fn check_topics(topics: &[String]) -> Result<()> {
    if topics.is_empty() {
        return Err(Error::Config("subscribe to at least one topic".into()));
    }
    Ok(())
}

/// Compiles a subscription pattern so that it must match a topic's whole name (as Kafka's
/// `Pattern.matcher(topic).matches()` does).
pub(crate) fn compile_pattern(pattern: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| Error::Config(format!("subscription pattern '{pattern}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_must_match_the_whole_topic_name() {
        let re = compile_pattern("orders-.*").unwrap();
        assert!(re.is_match("orders-eu"));
        assert!(!re.is_match("old-orders-eu"), "anchored at the start");
        let re = compile_pattern("orders|payments").unwrap();
        assert!(re.is_match("payments"));
        assert!(
            !re.is_match("payments-dlq"),
            "alternation is anchored as a whole"
        );
        assert!(compile_pattern("(").is_err());
    }
}
