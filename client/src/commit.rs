//! Offset commits of one consumer, in order: a single task sends them one after another, so a
//! later commit is never overtaken by an earlier one (a committed offset this consumer wrote
//! never moves back because two requests crossed). `commit` waits for its turn and its answer;
//! `commit_async` and auto-commit only queue.
//!
//! Each commit carries the member identity captured with its offsets (see `group.rs`): a
//! commit refused as `StaleMemberEpoch` is sent again with the member's newer epoch only while
//! the member is the same incarnation that owned the partitions; a fenced member's commit is
//! never re-sent under a new epoch.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quiver_proto::api::group::{
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, NO_GENERATION,
};
use quiver_proto::api::ApiKey;
use quiver_proto::{BrokerId, ErrorCode, Offset};
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::group::{backoff, find_coordinator, CommitIdentity};
use crate::grouping::by_topic;
use crate::record::TopicPartition;

/// How long a commit keeps retrying errors that may pass (no coordinator yet, a lost
/// connection) before it fails.
pub(crate) const COMMIT_RETRY_TIME_MAX: Duration = Duration::from_secs(30);

/// A committed offset with the optional metadata string stored beside it (Kafka's
/// `OffsetAndMetadata`). The offset is the next record to read.
///
/// ```
/// use quiver_client::{Offset, OffsetAndMetadata};
/// let o = OffsetAndMetadata::new(Offset(42)).metadata("batch 7 of the nightly import");
/// assert_eq!(o.offset, Offset(42));
/// assert_eq!(o.metadata.as_deref(), Some("batch 7 of the nightly import"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OffsetAndMetadata {
    /// The next record to read.
    #[serde(serialize_with = "ser_offset")]
    pub offset: Offset,
    /// A string stored with the offset.
    pub metadata: Option<String>,
}

fn ser_offset<S: serde::Serializer>(o: &Offset, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(o.0)
}

impl OffsetAndMetadata {
    /// `offset` without metadata.
    pub fn new(offset: Offset) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset,
            metadata: None,
        }
    }

    /// Stores `m` with the offset.
    pub fn metadata(mut self, m: impl Into<String>) -> OffsetAndMetadata {
        self.metadata = Some(m.into());
        self
    }
}

/// The outcome of a commit that was queued without waiting (`Consumer::commit_async`): await
/// it for the broker's answer, or drop it (the commit still happens; a failure is logged).
///
/// ```no_run
/// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
/// use std::time::Duration;
/// let records = consumer.poll(Duration::from_secs(1)).await?;
/// // ... process the records ...
/// let pending = consumer.commit_async(); // poll again at once; the commit goes on meanwhile
/// let more = consumer.poll(Duration::from_secs(1)).await?;
/// pending.await?; // the broker has the first commit
/// # Ok(()) }
/// ```
#[must_use = "a dropped handle does not cancel the commit, but its error is then only logged"]
pub struct CommitHandle {
    rx: oneshot::Receiver<Result<()>>,
}

impl CommitHandle {
    /// A handle that is already answered with `e`.
    pub(crate) fn failed(e: Error) -> CommitHandle {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(e));
        CommitHandle { rx }
    }
}

impl Future for CommitHandle {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

struct Job {
    offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    /// `None`: a commit from outside the group (manually assigned partitions).
    identity: Option<CommitIdentity>,
    reply: Option<oneshot::Sender<Result<()>>>,
    /// An auto-commit: clears `auto_pending` when done.
    auto: bool,
}

/// The sending side of one consumer's commit task.
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Job>,
    /// An auto-commit is queued or in flight; the next one is skipped rather than queued
    /// behind it (it would carry the same or newer positions anyway).
    auto_pending: Arc<AtomicBool>,
}

impl Committer {
    /// Starts the commit task (needs a tokio runtime).
    pub(crate) fn start(client: Client, group: String, retry_backoff: Duration) -> Committer {
        let (tx, rx) = mpsc::unbounded_channel();
        let auto_pending = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(client, group, retry_backoff, rx, auto_pending.clone()));
        Committer { tx, auto_pending }
    }

    /// Queues a commit; the handle gives its outcome.
    pub(crate) fn queue(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
        identity: Option<CommitIdentity>,
    ) -> CommitHandle {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            offsets,
            identity,
            reply: Some(reply),
            auto: false,
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            if let Some(r) = job.reply {
                let _ = r.send(Err(Error::Closed));
            }
        }
        CommitHandle { rx }
    }

    /// Queues an auto-commit unless one is still pending.
    pub(crate) fn queue_auto(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
        identity: Option<CommitIdentity>,
    ) {
        if offsets.is_empty() || self.auto_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let job = Job {
            offsets,
            identity,
            reply: None,
            auto: true,
        };
        if self.tx.send(job).is_err() {
            self.auto_pending.store(false, Ordering::Release);
        }
    }
}

async fn run(
    client: Client,
    group: String,
    retry_backoff: Duration,
    mut rx: mpsc::UnboundedReceiver<Job>,
    auto_pending: Arc<AtomicBool>,
) {
    let mut coordinator: Option<BrokerId> = None;
    while let Some(job) = rx.recv().await {
        let result =
            commit_with_retries(&client, &group, retry_backoff, &mut coordinator, &job).await;
        if job.auto {
            auto_pending.store(false, Ordering::Release);
        }
        match job.reply {
            Some(reply) => {
                if let Err(Err(e)) = reply.send(result) {
                    tracing::warn!(group = %group, error = %e, "offset commit failed");
                }
            }
            None => {
                if let Err(e) = result {
                    tracing::warn!(group = %group, error = %e, "auto-commit failed");
                }
            }
        }
    }
}

async fn commit_with_retries(
    client: &Client,
    group: &str,
    retry_backoff: Duration,
    coordinator: &mut Option<BrokerId>,
    job: &Job,
) -> Result<()> {
    if job.offsets.is_empty() {
        return Ok(());
    }
    client
        .require(ApiKey::OffsetCommit, "committing offsets")
        .await?;
    let deadline = tokio::time::Instant::now() + COMMIT_RETRY_TIME_MAX;
    let mut epoch = job.identity.as_ref().map_or(NO_GENERATION, |i| i.epoch);
    let mut failures = 0u32;
    loop {
        let err = match commit_once(client, group, coordinator, job, epoch).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let retry = match err.code() {
            Some(
                ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress,
            ) => {
                *coordinator = None;
                true
            }
            Some(ErrorCode::StaleMemberEpoch) => {
                // The member moved to a newer epoch while keeping its partitions.
                match job
                    .identity
                    .as_ref()
                    .and_then(CommitIdentity::current_epoch)
                {
                    Some(now) if now != epoch => {
                        epoch = now;
                        true
                    }
                    _ => false,
                }
            }
            // A missing topic will not come back by waiting.
            Some(ErrorCode::UnknownTopicOrPartition) => false,
            Some(c) => c.is_retriable(),
            None => {
                let retriable = err.is_retriable();
                if retriable {
                    *coordinator = None;
                }
                retriable
            }
        };
        if !retry || tokio::time::Instant::now() >= deadline {
            return Err(err);
        }
        failures += 1;
        tokio::time::sleep(backoff(retry_backoff, failures)).await;
    }
}

async fn commit_once(
    client: &Client,
    group: &str,
    coordinator: &mut Option<BrokerId>,
    job: &Job,
    epoch: i32,
) -> Result<()> {
    let broker = match *coordinator {
        Some(b) => b,
        None => {
            let b = find_coordinator(client, group).await?;
            *coordinator = Some(b);
            b
        }
    };
    let parts = job.offsets.iter().map(|(tp, o)| {
        let part = OffsetCommitPartition {
            partition: tp.partition,
            committed_offset: o.offset,
            committed_leader_epoch: None,
            committed_metadata: o.metadata.clone(),
        };
        (&tp.topic, part)
    });
    let topics = by_topic(parts, |name, partitions| OffsetCommitTopic {
        name: name.clone(),
        partitions,
    });
    // A member commits as itself (the broker fences stale epochs and removed members); a
    // consumer with assigned partitions commits from outside the group, which the broker
    // accepts while the group has no members.
    let (member_id, instance_id) = match &job.identity {
        Some(i) => (i.member_id.clone(), i.instance_id.clone()),
        None => (String::new(), None),
    };
    let req = OffsetCommitRequest {
        group_id: group.to_string(),
        generation_id_or_member_epoch: epoch,
        member_id,
        group_instance_id: instance_id,
        topics,
    };
    let (resp, _) = client.call_broker(broker, &req, Vec::new()).await?;
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != ErrorCode::None {
                let why = match p.error_code {
                    ErrorCode::UnknownMemberId if job.identity.is_none() => format!(
                        "group '{group}' has active members; only they may commit (stop them to \
                         change the group's offsets)"
                    ),
                    ErrorCode::UnknownMemberId => format!(
                        "this member is no longer in group '{group}' (its session expired or it \
                         was replaced); the commit of {}/{} was refused",
                        t.name, p.partition.0
                    ),
                    ErrorCode::StaleMemberEpoch => format!(
                        "member epoch {epoch} is stale in group '{group}'; the commit of {}/{} \
                         was refused",
                        t.name, p.partition.0
                    ),
                    c => format!(
                        "commit of {}/{} for group '{group}': {}",
                        t.name,
                        p.partition.0,
                        c.description()
                    ),
                };
                return Err(Error::broker(p.error_code, Some(why)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handle_whose_commit_task_is_gone_reports_closed() {
        let (reply, rx) = oneshot::channel::<Result<()>>();
        drop(reply);
        let err = CommitHandle { rx }.await.unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
    }
}
