//! Group membership: subscribing, the assignment the group gives this member (applied only
//! between polls), rebalance events, and leaving on close.

use std::time::Duration;

use quiver_proto::api::ApiKey;
use quiver_proto::Offset;
use tokio::sync::mpsc;

use super::{Consumer, RebalanceEvent};
use crate::error::{Error, Result};
use crate::group::{check_topics, compile_pattern, MemberOptions, Membership, Subscription};
use crate::record::TopicPartition;

impl Consumer {
    /// Joins the consumer's group (`group_id`) and reads the partitions of `topics` that the
    /// group assigns to this member; the other members get the rest, and the split changes as
    /// members come and go or topics grow. Each partition starts at the group's committed
    /// offset (else `auto_offset_reset`). Calling it again changes the subscription.
    ///
    /// ```no_run
    /// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
    /// use quiver_client::{Consumer, ConsumerConfig};
    /// use std::time::Duration;
    /// let mut consumer = Consumer::new(client, ConsumerConfig::default().group_id("billing"));
    /// consumer.subscribe(vec!["orders".into()]).await?;
    /// loop {
    ///     for r in consumer.poll(Duration::from_secs(1)).await? {
    ///         println!("{}/{}@{}", r.topic, r.partition, r.offset);
    ///     }
    ///     consumer.commit().await?; // or rely on auto-commit
    /// }
    /// # }
    /// ```
    pub async fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        check_topics(&topics)?;
        for t in &topics {
            self.client.topic(t).await?;
        }
        self.join(Subscription::Topics(topics)).await
    }

    /// Like [`subscribe`](Consumer::subscribe), to every topic whose whole name matches the
    /// regular expression `pattern` (`regex` crate syntax; `orders-.*` matches `orders-eu`, not
    /// `old-orders-eu`). Internal topics never match. The topics are listed again every
    /// `metadata_max_age`, so topics created (or deleted) later join (or leave) the
    /// subscription. A pattern that matches nothing yet is not an error: the consumer joins
    /// the group once a topic matches.
    ///
    /// ```no_run
    /// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
    /// use quiver_client::{Consumer, ConsumerConfig};
    /// use std::time::Duration;
    /// let config = ConsumerConfig::default()
    ///     .group_id("audit")
    ///     .metadata_max_age(Duration::from_secs(10));
    /// let mut consumer = Consumer::new(client, config);
    /// consumer.subscribe_pattern("orders-.*").await?;
    /// for r in consumer.poll(Duration::from_secs(1)).await? {
    ///     println!("{}/{}@{}", r.topic, r.partition, r.offset);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let re = compile_pattern(pattern)?;
        self.join(Subscription::Pattern(re)).await
    }

    pub(super) async fn join(&mut self, subscription: Subscription) -> Result<()> {
        let group = self.group()?.to_string();
        if self
            .config
            .instance_id
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err(Error::Config("instance_id must not be empty".into()));
        }
        self.client
            .require(ApiKey::ConsumerGroupHeartbeat, "joining a consumer group")
            .await?;
        match &self.membership {
            Some(m) => m.set_subscription(subscription),
            None => {
                self.apply_assignment(Vec::new());
                self.membership = Some(Membership::start(
                    self.client.clone(),
                    MemberOptions {
                        group_id: group,
                        subscription,
                        instance_id: self.config.instance_id.clone(),
                        assignor: self.config.assignor.map(|a| a.name().to_string()),
                        rebalance_timeout: self.config.rebalance_timeout,
                        retry_backoff: self.config.retry_backoff,
                        metadata_max_age: self.config.metadata_max_age,
                    },
                ));
            }
        }
        Ok(())
    }

    /// The topics this consumer is subscribed to now (for a pattern, the topics it matched
    /// when the cluster's topics were last listed); empty when not subscribed.
    ///
    /// ```no_run
    /// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// consumer.subscribe_pattern("orders-.*").await?;
    /// consumer.poll(std::time::Duration::from_secs(1)).await?;
    /// println!("reading {:?}", consumer.subscription());
    /// # Ok(()) }
    /// ```
    pub fn subscription(&self) -> Vec<String> {
        self.membership
            .as_ref()
            .map(Membership::subscribed)
            .unwrap_or_default()
    }

    /// A channel of this consumer's [`RebalanceEvent`]s: partitions assigned, revoked and
    /// lost, in order. Events are sent from `poll` (and `close`), where changes are applied.
    /// Calling it again replaces the channel; events nobody receives are dropped.
    ///
    /// ```no_run
    /// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
    /// use quiver_client::{Consumer, ConsumerConfig, RebalanceEvent};
    /// use std::time::Duration;
    /// let mut consumer = Consumer::new(client, ConsumerConfig::default().group_id("billing"));
    /// let mut events = consumer.rebalance_events();
    /// consumer.subscribe(vec!["orders".into()]).await?;
    /// loop {
    ///     let records = consumer.poll(Duration::from_secs(1)).await?;
    ///     while let Ok(event) = events.try_recv() {
    ///         match event {
    ///             RebalanceEvent::Assigned(tps) => println!("now reading {tps:?}"),
    ///             RebalanceEvent::Revoked(tps) => println!("handed over {tps:?}"),
    ///             RebalanceEvent::Lost(tps) => println!("fenced; lost {tps:?}"),
    ///         }
    ///     }
    ///     // ... process records ...
    /// #   drop(records);
    /// }
    /// # }
    /// ```
    pub fn rebalance_events(&mut self) -> mpsc::UnboundedReceiver<RebalanceEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.events = Some(tx);
        rx
    }

    pub(super) fn emit(&mut self, event: RebalanceEvent) {
        let gone = match &self.events {
            Some(tx) => tx.send(event).is_err(),
            None => false,
        };
        if gone {
            self.events = None;
        }
    }

    /// Commits (with auto-commit, or `commit_on_revoke` for a group member), leaves the group
    /// if subscribed, and stops fetching. A static member (`instance_id`) does not leave: it
    /// tells the broker it will be back, and its partitions wait for it until the session
    /// timeout.
    pub async fn close(mut self) -> Result<()> {
        let commit = self.config.group_id.is_some()
            && (self.config.enable_auto_commit
                || (self.membership.is_some() && self.config.commit_on_revoke));
        let lost = self
            .membership
            .as_ref()
            .is_some_and(|m| m.shared.state.lock().expect("not poisoned").lost);
        let committed = if commit && !lost {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(m) = self.membership.take() {
            let held = self.assignment();
            if !held.is_empty() {
                self.emit(if lost {
                    RebalanceEvent::Lost(held)
                } else {
                    RebalanceEvent::Revoked(held)
                });
            }
            m.leave(Duration::from_secs(5)).await;
        }
        committed
    }

    /// This member's id in its group, once subscribed.
    pub fn member_id(&self) -> Option<String> {
        self.membership.as_ref().map(|m| m.shared.member_id.clone())
    }

    /// Applies the group's newest assignment, if it changed: commits what is given up (with
    /// auto-commit or `commit_on_revoke`), then takes the new set and tells the heartbeat task
    /// it now owns it. After a fencing, drops every partition without committing instead.
    pub(super) async fn sync_group(&mut self) -> Result<()> {
        let Some(shared) = self.membership.as_ref().map(|m| m.shared.clone()) else {
            return Ok(());
        };
        let (target, generation) = {
            let mut st = shared.state.lock().expect("not poisoned");
            if let Some(e) = st.fatal.take() {
                return Err(e);
            }
            if st.lost {
                // Fenced: these partitions may be another member's already. Positions are
                // forgotten, so partitions assigned again start from the committed offsets.
                let lost: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
                self.apply_assignment(Vec::new());
                st.owned.clear();
                st.target.clear();
                st.lost = false;
                st.epoch = quiver_proto::api::group::JOIN_EPOCH;
                drop(st);
                shared.nudge.notify_one();
                tracing::info!(group = %shared.group_id, partitions = ?lost, "partitions lost; rejoining");
                if !lost.is_empty() {
                    self.emit(RebalanceEvent::Lost(lost));
                }
                return Ok(());
            }
            if st.target == st.owned {
                return Ok(());
            }
            (st.target.clone(), st.generation)
        };
        let revoked: Vec<TopicPartition> = self
            .assignment
            .keys()
            .filter(|tp| !target.contains(*tp))
            .cloned()
            .collect();
        let commit: Vec<(TopicPartition, Offset)> = revoked
            .iter()
            .filter_map(|tp| self.position(tp).map(|o| (tp.clone(), o)))
            .collect();
        if !commit.is_empty() && (self.config.enable_auto_commit || self.config.commit_on_revoke) {
            if let Err(e) = self.commit_offsets(&commit).await {
                tracing::warn!(error = %e, "committing revoked partitions failed");
            }
        }
        let added: Vec<TopicPartition> = target
            .iter()
            .filter(|tp| !self.assignment.contains_key(*tp))
            .cloned()
            .collect();
        {
            let mut st = shared.state.lock().expect("not poisoned");
            if st.lost || st.generation != generation {
                // Fenced while committing: the next turn drops everything.
                return Ok(());
            }
            self.apply_assignment(target.iter().cloned().collect());
            st.owned = target;
        }
        shared.nudge.notify_one();
        if !revoked.is_empty() {
            self.emit(RebalanceEvent::Revoked(revoked));
        }
        if !added.is_empty() {
            self.emit(RebalanceEvent::Assigned(added));
        }
        Ok(())
    }
}
