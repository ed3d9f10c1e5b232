//! The group's offsets: commits (sync, async, auto, on revocation) through the one commit task,
//! in the order they were made, and the committed offsets read back.

use std::time::Instant;

use quiver_proto::api::group::{OffsetFetchRequest, NO_GENERATION};
use quiver_proto::api::{ApiKey, TopicPartitions};
use quiver_proto::{BrokerId, ErrorCode, Offset};

use super::Consumer;
use crate::commit::{CommitHandle, Committer, OffsetAndMetadata};
use crate::error::{Error, Result};
use crate::group::{find_coordinator, Membership};
use crate::grouping::by_topic;
use crate::record::TopicPartition;

impl Consumer {
    /// Queues a commit of every position if auto-commit is due; never waits for it.
    pub(super) fn auto_commit(&mut self) {
        if self.config.group_id.is_none()
            || !self.config.enable_auto_commit
            || self.last_auto_commit.elapsed() < self.config.auto_commit_interval
        {
            return;
        }
        self.last_auto_commit = Instant::now();
        let offsets = self.positions();
        let identity = self.membership.as_ref().map(Membership::commit_identity);
        match self.committer() {
            Ok(c) => c.queue_auto(offsets, identity),
            Err(e) => tracing::warn!(error = %e, "auto-commit failed"),
        }
    }

    /// Every assigned partition's position, as offsets to commit.
    pub(super) fn positions(&self) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        self.assignment
            .iter()
            .filter_map(|(tp, s)| s.position.map(|o| (tp.clone(), OffsetAndMetadata::new(o))))
            .collect()
    }

    pub(super) fn committer(&self) -> Result<&Committer> {
        let group = self.group()?;
        Ok(self.committer.get_or_init(|| {
            Committer::start(
                self.client.clone(),
                group.to_string(),
                self.config.retry_backoff,
            )
        }))
    }

    /// Commits the current position of every assigned partition for the consumer's group,
    /// and waits for the broker's answer (after any commit queued before it).
    ///
    /// Needs `group_id`. A subscribed member commits as itself: a member that was fenced (its
    /// session expired, or it was replaced) is refused with `UnknownMemberId`, one whose epoch
    /// is out of date with `StaleMemberEpoch` ([`Error::code`] tells which). A consumer with
    /// assigned partitions commits from outside the group, which the broker accepts while
    /// the group has no members. Errors that may pass (no coordinator yet, a lost
    /// connection) are retried for up to 30 s. Against a broker without consumer groups this
    /// fails with [`Error::Unsupported`].
    ///
    /// ```no_run
    /// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use quiver_client::ErrorCode;
    /// use std::time::Duration;
    /// let records = consumer.poll(Duration::from_secs(1)).await?;
    /// // ... process the records ...
    /// match consumer.commit().await {
    ///     Ok(()) => {}
    ///     Err(e) if e.code() == Some(ErrorCode::UnknownMemberId) => {
    ///         // This member was fenced; its partitions went to others, which will read
    ///         // these records again. The next poll rejoins the group.
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # drop(records); Ok(()) }
    /// ```
    pub async fn commit(&mut self) -> Result<()> {
        let offsets = self.positions();
        self.queue_commit(offsets)?.await
    }

    /// Queues a commit of every assigned partition's current position and returns at once:
    /// `poll` goes on while the commit is sent. Commits are sent one at a time in the order
    /// they were made, so a later commit never lands before an earlier one, and `commit`
    /// waits for those queued before it. Await the handle for the outcome, or drop it (a
    /// failure is then logged).
    ///
    /// ```no_run
    /// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use std::time::Duration;
    /// let mut pending = Vec::new();
    /// for _ in 0..10 {
    ///     let records = consumer.poll(Duration::from_secs(1)).await?;
    ///     // ... process the records ...
    /// #   drop(records);
    ///     pending.push(consumer.commit_async());
    /// }
    /// for p in pending {
    ///     if let Err(e) = p.await {
    ///         eprintln!("a commit failed: {e}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn commit_async(&self) -> CommitHandle {
        let offsets = self.positions();
        self.queue_or_fail(offsets)
    }

    /// Commits these offsets (each the next record to read) for the consumer's group, and
    /// waits for the answer.
    ///
    /// ```no_run
    /// # async fn f(consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use quiver_client::{Offset, TopicPartition};
    /// // Records up to offset 41 of orders/0 are processed: resume at 42.
    /// consumer.commit_offsets(&[(TopicPartition::new("orders", 0), Offset(42))]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn commit_offsets(&self, offsets: &[(TopicPartition, Offset)]) -> Result<()> {
        let offsets = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), OffsetAndMetadata::new(*o)))
            .collect();
        self.queue_commit(offsets)?.await
    }

    /// Queues a commit of these offsets, with an optional metadata string each (stored with
    /// the offset and returned by `Admin::list_group_offsets`), and returns at once.
    ///
    /// ```no_run
    /// # async fn f(consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use quiver_client::{Offset, OffsetAndMetadata, TopicPartition};
    /// let tp = TopicPartition::new("orders", 0);
    /// let handle = consumer.commit_offsets_async(vec![
    ///     (tp, OffsetAndMetadata::new(Offset(42)).metadata("invoice run 2024-05-01")),
    /// ]);
    /// handle.await?;
    /// # Ok(()) }
    /// ```
    pub fn commit_offsets_async(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> CommitHandle {
        self.queue_or_fail(offsets)
    }

    pub(super) fn queue_commit(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<CommitHandle> {
        let committer = self.committer()?;
        let identity = self.membership.as_ref().map(Membership::commit_identity);
        Ok(committer.queue(offsets, identity))
    }

    /// Like `queue_commit`, with a configuration error delivered through the handle.
    pub(super) fn queue_or_fail(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> CommitHandle {
        match self.queue_commit(offsets) {
            Ok(h) => h,
            Err(e) => CommitHandle::failed(e),
        }
    }

    /// The group's committed offsets for these partitions (`None`: nothing committed).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<Offset>)>> {
        let group = self.group()?;
        self.client
            .require(ApiKey::OffsetFetch, "reading committed offsets")
            .await?;
        let coordinator = self.coordinator(group).await?;
        let parts = tps.iter().map(|tp| (&tp.topic, tp.partition));
        let topics = by_topic(parts, |topic, partitions| TopicPartitions {
            topic: topic.clone(),
            partitions,
        });
        let req = OffsetFetchRequest {
            group_id: group.to_string(),
            member_id: None,
            member_epoch: NO_GENERATION,
            topics: Some(topics),
            require_stable: false,
        };
        let (resp, _) = self
            .client
            .call_broker(coordinator, &req, Vec::new())
            .await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, None));
        }
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != ErrorCode::None {
                    return Err(Error::broker(p.error_code, p.metadata.clone()));
                }
                out.push((
                    TopicPartition::new(&t.name, p.partition.0),
                    p.committed_offset,
                ));
            }
        }
        Ok(out)
    }

    pub(super) fn group(&self) -> Result<&str> {
        self.config.group_id.as_deref().ok_or_else(|| {
            Error::Config(
                "committed offsets belong to a group: set ConsumerConfig::group_id".into(),
            )
        })
    }

    pub(super) async fn coordinator(&self, group: &str) -> Result<BrokerId> {
        find_coordinator(&self.client, group).await
    }
}
