//! Where one partition of a cluster lives: its replicas, its leader and in-sync replicas, and
//! the epochs that tell changes apart. Part of each topic in the metadata log (`meta`); changed
//! by the state machine as brokers come and go and leaders propose ISR changes (`election`).

use serde::{Deserialize, Serialize};

/// Where one partition of a cluster lives: its replicas, which one leads, and which are in
/// sync. Only the controller changes it, through the metadata log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The brokers holding a replica, the preferred leader first.
    pub replicas: Vec<u32>,
    /// The broker that leads: takes writes and serves reads. Always in the ISR.
    pub leader: u32,
    /// Grows each time the leader changes, so a stale leader's word is told apart.
    pub leader_epoch: u32,
    /// In-sync replicas: the replicas that hold every acknowledged record durably (acks=all
    /// waits for each one's fdatasync). Never empty; the leader is one of them.
    pub isr: Vec<u32>,
    /// Grows with every change of the partition (leader or ISR); an ISR change names the epoch
    /// it was proposed in and is refused if another change came first.
    #[serde(default)]
    pub partition_epoch: u32,
    /// While a reassignment runs (`cluster::reassign`): the replicas it adds (they fetch from
    /// the leader and join the ISR once caught up, as any follower).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<u32>,
    /// While a reassignment runs: the replicas it removes, kept (and in the ISR) until every
    /// replica of the target is in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<u32>,
}

impl PartitionMeta {
    /// A new partition on `replicas`: led by the first, every replica in sync (all are empty).
    pub fn new(replicas: Vec<u32>) -> PartitionMeta {
        let leader = replicas.first().copied().unwrap_or(0);
        PartitionMeta {
            isr: replicas.clone(),
            replicas,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// Whether a reassignment is under way (`adding` or `removing` not empty).
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas the partition is moving to: every replica but those being removed (all of
    /// them when no reassignment runs), the preferred leader first.
    pub fn target(&self) -> Vec<u32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    /// Whether the partition has a leader (0: none, until an ISR member returns).
    pub fn has_leader(&self) -> bool {
        self.leader != 0
    }

    /// What keeps a placement consistent: replicas named once each (broker ids are >= 1), the
    /// ISR within them and not empty, and the leader (if any) within the ISR.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        if self.replicas.is_empty() {
            return Err("a partition needs at least one replica".into());
        }
        for r in &self.replicas {
            if *r == 0 || !seen.insert(*r) {
                return Err(format!(
                    "replicas {:?} name broker {r} twice or name broker 0",
                    self.replicas
                ));
            }
        }
        if let Some(r) = self.isr.iter().find(|r| !seen.contains(r)) {
            return Err(format!("ISR member {r} is not a replica"));
        }
        if self.isr.is_empty() {
            return Err("the ISR is empty".into());
        }
        if self.leader != 0 && !self.isr.contains(&self.leader) {
            return Err(format!("leader {} is not in the ISR", self.leader));
        }
        for r in self.adding.iter().chain(&self.removing) {
            if !seen.contains(r) {
                return Err(format!(
                    "replica {r} being added or removed is not a replica"
                ));
            }
        }
        if let Some(r) = self.adding.iter().find(|r| self.removing.contains(r)) {
            return Err(format!("replica {r} is both being added and removed"));
        }
        if self.target().is_empty() {
            return Err("a reassignment would remove every replica".into());
        }
        Ok(())
    }
}
