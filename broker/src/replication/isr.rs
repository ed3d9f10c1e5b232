//! The ISRs of the partitions a shard leads. Now and then the leader compares each follower's
//! progress (`runtime::replica::Progress`) with the ISR metadata holds, and proposes the change
//! through the metadata log (`AlterIsr`, checked by the state machine against the epochs it was
//! proposed in, `cluster::election`):
//!
//! - a member not caught up with the leader's log end for `replica_lag_time_max_ms` (it fell
//!   behind, stopped, or is cut off) leaves: the high watermark and acks=all stop waiting for it;
//! - a replica out of the ISR whose fetch offset has reached the high watermark, and that
//!   fetched within the same time, comes back (it holds every acknowledged record durably).
//!
//! One proposal per partition at a time; a refused one (another change came first) is
//! reconsidered with the new metadata.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use quiver_proto::ShardId;

use crate::cluster::meta::MetadataCommand;
use crate::runtime::replica::{Progress, Role};
use crate::runtime::Shard;

/// The ISR a leader wants, given its followers' progress: members that kept up within `lag`
/// stay, replicas out of the ISR that reached the high watermark and fetched within `lag` join.
/// `leading_since` stands in for a follower not heard from in this epoch; only `live` brokers
/// (registered, unfenced) join.
#[allow(clippy::too_many_arguments)]
pub(crate) fn wanted_isr(
    role: &Role,
    me: u32,
    live: impl Fn(u32) -> bool,
    followers: &std::collections::BTreeMap<u32, Progress>,
    high_watermark: quiver_proto::Offset,
    leading_since: Instant,
    now: Instant,
    lag: Duration,
) -> Vec<u32> {
    let recent = |t: Instant| now.saturating_duration_since(t) <= lag;
    let mut isr: Vec<u32> = role
        .isr
        .iter()
        .copied()
        .filter(|b| {
            *b == me
                || followers
                    .get(b)
                    .map_or(recent(leading_since), |p| recent(p.caught_up_at))
        })
        .collect();
    for r in &role.replicas {
        if isr.contains(r) || *r == me || !live(*r) {
            continue;
        }
        if let Some(p) = followers.get(r) {
            if p.durable >= high_watermark && recent(p.fetched_at) {
                isr.push(*r);
            }
        }
    }
    isr
}

/// Longest wait for an ISR change to commit before it is reconsidered.
const PROPOSAL_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn maintain(shard: Rc<Shard>) {
    let lag = Duration::from_millis(shard.config.replica_lag_time_max_ms);
    let every = (lag / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let me = shard.config.broker_id;
    while !shard.shutdown.is_set() {
        glommio::timer::sleep(every).await;
        let snapshot = shard.snapshot();
        if !snapshot.registered {
            continue;
        }
        for (key, r) in shard.replica_states() {
            if !r.leads() || r.isr_change_pending.get() {
                continue;
            }
            let Ok(log) = shard.log(&key) else {
                continue;
            };
            let role = r.role();
            let hw = shard.visible_end(&key, &log);
            let isr = wanted_isr(
                &role,
                me,
                |b| snapshot.is_live(b),
                &r.followers(),
                hw,
                r.leading_since(),
                Instant::now(),
                lag,
            );
            if isr == role.isr {
                continue;
            }
            let Some(topic) = snapshot.topics.values().find(|t| t.id == key.topic_id) else {
                continue;
            };
            let shrink = isr.len() < role.isr.len();
            tracing::info!(topic = %topic.meta.name, partition = key.partition.0, from = ?role.isr, to = ?isr, "proposing an ISR change");
            let joining: Vec<u32> = isr
                .iter()
                .copied()
                .filter(|b| !role.isr.contains(b))
                .collect();
            let cmd = MetadataCommand::AlterIsr {
                topic: topic.meta.name.clone(),
                partition: key.partition.0,
                leader: me,
                leader_epoch: role.leader_epoch,
                partition_epoch: role.partition_epoch,
                isr,
            };
            r.isr_change_pending.set(true);
            r.set_joining(joining);
            let (shard2, r2) = (shard.clone(), r.clone());
            glommio::spawn_local(async move {
                let result = shard2
                    .run_on(ShardId(0), move |_| async move {
                        match crate::quorum::on_this_shard() {
                            // Bounded: a proposal lost with a quorum leader that died is
                            // proposed again (with what is wanted then) soon after.
                            Some(q) => {
                                match crate::quorum::within(PROPOSAL_WAIT, q.propose(cmd)).await {
                                    Some(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                                    None => Err("not committed in time".to_string()),
                                }
                            }
                            None => Err("no controller quorum on this broker".to_string()),
                        }
                    })
                    .await
                    .unwrap_or_else(|| Err("shutting down".into()));
                match result {
                    Ok(()) => {
                        let counter = if shrink {
                            &shard2.metrics.isr_shrinks
                        } else {
                            &shard2.metrics.isr_expands
                        };
                        counter.fetch_add(1, Relaxed);
                    }
                    Err(why) => {
                        tracing::debug!(error = %why, "ISR change not committed");
                    }
                }
                r2.set_joining(Vec::new());
                r2.isr_change_pending.set(false);
            })
            .detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::Offset;
    use std::collections::BTreeMap;

    /// (case, follower 2's progress, follower 3's progress, ISR before, ISR wanted)
    #[test]
    fn who_is_in_sync() {
        let now = Instant::now() + Duration::from_secs(100);
        let lag = Duration::from_secs(10);
        let ago = |s: u64| now - Duration::from_secs(s);
        let prog = |durable: u64, fetched: u64, caught: u64| Progress {
            durable: Offset(durable),
            fetched_at: ago(fetched),
            caught_up_at: ago(caught),
            leader_end_at_fetch: Offset(durable),
            window_fetches: 0,
            window_start: ago(fetched),
            last_window: None,
        };
        type Case<'a> = (
            &'a str,
            Option<Progress>,
            Option<Progress>,
            &'a [u32],
            &'a [u32],
        );
        let cases: &[Case] = &[
            (
                "all keeping up",
                Some(prog(100, 0, 0)),
                Some(prog(100, 0, 1)),
                &[1, 2, 3],
                &[1, 2, 3],
            ),
            (
                "3 behind too long",
                Some(prog(100, 0, 0)),
                Some(prog(50, 0, 11)),
                &[1, 2, 3],
                &[1, 2],
            ),
            (
                "3 silent too long",
                Some(prog(100, 0, 0)),
                Some(prog(100, 11, 11)),
                &[1, 2, 3],
                &[1, 2],
            ),
            (
                "3 never heard, epoch young",
                Some(prog(100, 0, 0)),
                None,
                &[1, 2, 3],
                &[1, 2, 3],
            ),
            (
                "3 back at the high watermark",
                Some(prog(100, 0, 0)),
                Some(prog(90, 0, 30)),
                &[1, 2],
                &[1, 2, 3],
            ),
            (
                "3 back but short of it",
                Some(prog(100, 0, 0)),
                Some(prog(89, 0, 30)),
                &[1, 2],
                &[1, 2],
            ),
            (
                "3 at it but silent",
                Some(prog(100, 0, 0)),
                Some(prog(95, 11, 30)),
                &[1, 2],
                &[1, 2],
            ),
        ];
        for (name, two, three, before, want) in cases {
            let role = Role {
                leader: 1,
                leader_epoch: 1,
                partition_epoch: 1,
                isr: before.to_vec(),
                replicas: vec![1, 2, 3],
            };
            let mut followers = BTreeMap::new();
            if let Some(p) = two {
                followers.insert(2, *p);
            }
            if let Some(p) = three {
                followers.insert(3, *p);
            }
            let got = wanted_isr(&role, 1, |_| true, &followers, Offset(90), ago(5), now, lag);
            let fenced = wanted_isr(
                &role,
                1,
                |b| b != 3,
                &followers,
                Offset(90),
                ago(5),
                now,
                lag,
            );
            assert!(
                before.contains(&3) || !fenced.contains(&3),
                "{name}: a fenced broker never joins"
            );
            assert_eq!(got, *want, "{name}");
        }
    }
}
