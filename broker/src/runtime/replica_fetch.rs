//! A follower's fetch, served by the shard that owns the leader's log: the divergence check
//! (KIP-320: the follower's last epoch against where that epoch ends here), the follower's
//! progress (its fetch offset is its durable end, which moves the high watermark), and the
//! batches as stored, up to what is written (a follower may copy what the leader has not yet
//! made durable: it is acknowledged only once both have).

use std::collections::HashMap;
use std::time::Instant;

use quiver_engine::{Error as EngineError, Records};
use quiver_proto::{LeaderEpoch, Offset, ShardId};
use std::rc::Rc;

use super::mesh::PartError;
use super::shard::{sleep_until, Shard};
use crate::cluster::state::PartKey;

/// What the leader answers for one partition of a follower's fetch.
#[derive(Clone, Debug, Default)]
pub struct ReplicaRead {
    /// Batches as stored from the fetch offset (empty when diverging).
    pub records: Records,
    /// The follower must truncate first: the largest epoch the leader has at or below the
    /// follower's last one, and where it ends.
    pub diverging: Option<(LeaderEpoch, Offset)>,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// One partition a follower asks for.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaAsk {
    pub key: PartKey,
    pub fetch_offset: Offset,
    pub last_epoch: Option<LeaderEpoch>,
    pub max_bytes: usize,
}

impl Shard {
    /// Serves one partition of follower `follower`'s fetch on the leader (this shard owns it).
    /// `NotHosted` when this broker does not lead it in `leader_epoch`.
    pub async fn replica_read_local(
        &self,
        follower: u32,
        leader_epoch: u32,
        ask: ReplicaAsk,
    ) -> Result<ReplicaRead, PartError> {
        let log = self.log(&ask.key)?;
        let r = self.replica_state(&ask.key).ok_or(PartError::NotHosted)?;
        let role = r.role();
        if role.leader != self.config.broker_id || role.leader_epoch != leader_epoch {
            return Err(PartError::NotHosted);
        }
        let written = log.readable_end();
        let start = log.start_offset();
        if let Some(e) = ask.last_epoch {
            if e.0 != role.leader_epoch || ask.fetch_offset > written {
                let end = match r.epoch_end_memo(e.0) {
                    Some(end) => end,
                    None => {
                        let end = log.epoch_end(e).await?;
                        if e.0 < role.leader_epoch {
                            r.remember_epoch_end(e.0, end);
                        }
                        end
                    }
                };
                let diverging = match end {
                    None => Some((LeaderEpoch(0), start)),
                    Some((epoch, end)) if epoch < e || end < ask.fetch_offset => Some((epoch, end)),
                    Some(_) => None,
                };
                if let Some(d) = diverging {
                    tracing::info!(
                        follower,
                        partition = ask.key.partition.0,
                        fetch_offset = ask.fetch_offset.0,
                        last_epoch = e.0,
                        leader_epoch = role.leader_epoch,
                        log_start = start.0,
                        written = written.0,
                        epoch_end = ?end.map(|(e, o)| (e.0, o.0)),
                        "a follower's log diverges from this leader's: it truncates first"
                    );
                    return Ok(ReplicaRead {
                        diverging: Some(d),
                        high_watermark: self.visible_end(&ask.key, &log),
                        log_start: start,
                        ..ReplicaRead::default()
                    });
                }
            }
        }
        if ask.fetch_offset > written {
            // An empty follower ahead of the leader: cut back to the leader's end.
            return Ok(ReplicaRead {
                diverging: Some((LeaderEpoch(role.leader_epoch), written)),
                high_watermark: self.visible_end(&ask.key, &log),
                log_start: start,
                ..ReplicaRead::default()
            });
        }
        if ask.fetch_offset < start {
            return Err(PartError::Engine(EngineError::OffsetOutOfRange {
                requested: ask.fetch_offset,
                start,
                end: log.end_offset(),
            }));
        }
        r.record_fetch(follower, ask.fetch_offset, written);
        let high_watermark = self.visible_end(&ask.key, &log);
        let records = if ask.fetch_offset < written {
            log.read_records(ask.fetch_offset, ask.max_bytes, written)
                .await?
        } else {
            Records {
                next: ask.fetch_offset,
                ..Records::default()
            }
        };
        Ok(ReplicaRead {
            records,
            diverging: None,
            high_watermark,
            log_start: start,
        })
    }

    /// Resolves when any of `waits` has a record written at or past its offset (what a
    /// follower's long poll waits for), or at `deadline`.
    pub async fn wait_written_local(&self, waits: &[(PartKey, Offset)], deadline: Instant) {
        let mut futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = Vec::new();
        for (key, offset) in waits {
            if let Ok(log) = self.log(key) {
                let offset = *offset;
                futures.push(Box::pin(async move { log.wait_for_data(offset).await }));
            }
        }
        if futures.is_empty() {
            return sleep_until(deadline).await;
        }
        // One wait per partition: through `fan_in` (glommio's waker count, `runtime::fan_in`).
        let any = futures_util::future::select_all(futures);
        super::fan_in::fan_in(futures_lite::future::or(
            async { any.await.0 },
            sleep_until(deadline),
        ))
        .await;
    }

    /// [`Shard::replica_read_local`] for partitions grouped by owner, each group on its owner.
    pub async fn replica_read_on(
        self: &Rc<Self>,
        owner: ShardId,
        follower: u32,
        asks: Vec<(u32, ReplicaAsk)>,
    ) -> Vec<Result<ReplicaRead, PartError>> {
        let n = asks.len();
        self.run_on(owner, move |s| async move {
            let mut out = Vec::with_capacity(asks.len());
            for (epoch, ask) in asks {
                out.push(s.replica_read_local(follower, epoch, ask).await);
            }
            out
        })
        .await
        .unwrap_or_else(|| (0..n).map(|_| Err(PartError::ShuttingDown)).collect())
    }

    /// [`Shard::wait_written_local`] on every owner at once.
    pub async fn wait_written_any(
        self: &Rc<Self>,
        by_owner: HashMap<ShardId, Vec<(PartKey, Offset)>>,
        deadline: Instant,
    ) {
        let waits = by_owner.into_iter().map(|(owner, waits)| {
            let me = self.clone();
            Box::pin(async move {
                me.run_on(owner, move |s| async move {
                    s.wait_written_local(&waits, deadline).await
                })
                .await;
            })
        });
        let waits: Vec<_> = waits.collect();
        if waits.is_empty() {
            return;
        }
        futures_lite::future::or(
            async {
                futures_util::future::select_all(waits).await;
            },
            sleep_until(deadline),
        )
        .await;
    }
}
