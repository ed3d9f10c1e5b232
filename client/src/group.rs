//! Consumer-group membership (the KIP-848 consumer protocol): a background task heartbeats to
//! the group's coordinator, learns the partitions the broker assigns this member, and confirms
//! what the consumer owns. The consumer applies assignments in `poll`, between batches of
//! records, so a partition is never read after it has been given up.
//!
//! Call order: the consumer sets `owned` after it has applied a target; the task reports
//! `owned` in every heartbeat, which is how the broker learns that revoked partitions were let
//! go and may be handed to their new owners.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_proto::api::group::{
    ConsumerGroupHeartbeatRequest, CoordinatorType, FindCoordinatorRequest, JOIN_EPOCH, LEAVE_EPOCH,
};
use quiver_proto::api::TopicPartitions;
use quiver_proto::{BrokerId, ErrorCode, PartitionId};
use rand::RngCore;
use tokio::sync::Notify;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::record::TopicPartition;

pub(crate) struct Membership {
    pub(crate) shared: Arc<GroupShared>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct GroupShared {
    client: Client,
    pub(crate) group_id: String,
    pub(crate) member_id: String,
    rebalance_timeout: Duration,
    retry_backoff: Duration,
    pub(crate) state: Mutex<GroupState>,
    pub(crate) nudge: Notify,
    /// Signalled when the task has sent its leave heartbeat.
    left: Notify,
}

pub(crate) struct GroupState {
    pub(crate) epoch: i32,
    subscribed: Vec<String>,
    send_subscription: bool,
    /// The assignment the broker gave last; the consumer applies it when it differs from
    /// what it owns.
    pub(crate) target: BTreeSet<TopicPartition>,
    /// What the consumer holds now, reported in every heartbeat.
    pub(crate) owned: BTreeSet<TopicPartition>,
    interval: Duration,
    /// An error no retry can fix (bad group id, unknown assignor, ...): poll returns it.
    pub(crate) fatal: Option<Error>,
    leaving: bool,
    done: bool,
    coordinator: Option<BrokerId>,
}

impl Membership {
    pub(crate) fn start(
        client: Client,
        group_id: String,
        topics: Vec<String>,
        rebalance_timeout: Duration,
        retry_backoff: Duration,
    ) -> Membership {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let member_id = quiver_proto::api::Uuid(u128::from_be_bytes(id)).to_string();
        let shared = Arc::new(GroupShared {
            client,
            group_id,
            member_id,
            rebalance_timeout,
            retry_backoff,
            state: Mutex::new(GroupState {
                epoch: JOIN_EPOCH,
                subscribed: topics,
                send_subscription: true,
                target: BTreeSet::new(),
                owned: BTreeSet::new(),
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

    pub(crate) fn set_subscription(&self, topics: Vec<String>) {
        let mut st = self.shared.state.lock().expect("not poisoned");
        st.subscribed = topics;
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

    /// (member id, epoch) for commits.
    pub(crate) fn identity(&self) -> (String, i32) {
        let st = self.shared.state.lock().expect("not poisoned");
        (self.shared.member_id.clone(), st.epoch)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Best effort: the task sends the leave heartbeat if the runtime still runs.
        let mut st = self.shared.state.lock().expect("not poisoned");
        if !st.done {
            st.leaving = true;
            drop(st);
            self.shared.nudge.notify_one();
        } else {
            self.task.abort();
        }
    }
}

fn wire_partitions(tps: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for tp in tps {
        match out.iter_mut().find(|t| t.topic == tp.topic) {
            Some(t) => t.partitions.push(tp.partition),
            None => out.push(TopicPartitions {
                topic: tp.topic.clone(),
                partitions: vec![tp.partition],
            }),
        }
    }
    out
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

async fn heartbeat_loop(shared: Arc<GroupShared>) {
    let mut failures = 0u32;
    loop {
        let (req, leaving) = {
            let mut st = shared.state.lock().expect("not poisoned");
            let leaving = st.leaving;
            let joining = st.epoch == JOIN_EPOCH;
            let req = ConsumerGroupHeartbeatRequest {
                group_id: shared.group_id.clone(),
                member_id: shared.member_id.clone(),
                member_epoch: if leaving { LEAVE_EPOCH } else { st.epoch },
                instance_id: None,
                rack_id: None,
                rebalance_timeout_ms: joining.then(|| {
                    shared
                        .rebalance_timeout
                        .as_millis()
                        .min(u128::from(u32::MAX)) as u32
                }),
                subscribed_topic_names: (joining || st.send_subscription)
                    .then(|| st.subscribed.clone()),
                server_assignor: None,
                topic_partitions: Some(wire_partitions(&st.owned)),
            };
            st.send_subscription = false;
            (req, leaving)
        };
        if leaving && shared.state.lock().expect("not poisoned").epoch == JOIN_EPOCH {
            // Never joined: nothing to leave.
            finish(&shared);
            return;
        }
        let result = match coordinator(&shared).await {
            Ok(c) => shared.client.call_broker(c, &req, Vec::new()).await,
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
                        // Removed or fenced: give up every partition and join again.
                        tracing::info!(group = %shared.group_id, error = %e, "rejoining the group");
                        st.epoch = JOIN_EPOCH;
                        st.target = BTreeSet::new();
                        st.send_subscription = true;
                        wait = Duration::ZERO;
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

fn finish(shared: &GroupShared) {
    let mut st = shared.state.lock().expect("not poisoned");
    st.done = true;
    st.epoch = LEAVE_EPOCH;
    drop(st);
    shared.left.notify_waiters();
}

fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.min(5))
        .min(Duration::from_secs(2))
}

pub(crate) fn check_topics(topics: &[String]) -> Result<()> {
    if topics.is_empty() {
        return Err(Error::Config("subscribe to at least one topic".into()));
    }
    Ok(())
}
