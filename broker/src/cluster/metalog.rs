//! Where the controller sends metadata commands and reads the state they made: the
//! `MetadataLog` trait, and its single-broker form over a `MetadataStore` file.
//!
//! A cluster's form is the Raft quorum (`crate::quorum::QuorumLog`): a command is proposed,
//! committed by a majority of voters, and applied in log order on every broker, which also gives
//! every shard the new snapshot; the proposer learns the outcome when its own broker applies it.
//! On a single broker the command is checked against the state, written durably on glommio's
//! blocking pool, and the controller hands the shards their plan itself.

use std::cell::{Ref, RefCell};
use std::future::Future;
use std::pin::Pin;

use super::meta::{Applied, MetaError, MetadataCommand, MetadataState, MetadataStore};

/// A boxed future of this thread (glommio's tasks are `!Send`).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

pub trait MetadataLog {
    /// The state every command applied here so far has made.
    fn state(&self) -> Ref<'_, MetadataState>;

    /// Makes `cmd` part of metadata. Resolves with what applying it produced, or why it was
    /// refused (by the state machine, or because it could not be made durable or committed).
    fn submit(&self, cmd: MetadataCommand) -> LocalFuture<'_, Result<Applied, MetaError>>;

    /// Whether every shard has the new snapshot when `submit` resolves (a cluster's log applies
    /// committed commands itself); if not, the controller plans and the caller applies.
    fn applies_itself(&self) -> bool;

    /// In a cluster: this broker's id and the voters (placement, producer id blocks).
    fn cluster_member(&self) -> Option<&Membership> {
        None
    }

    /// In a cluster, on the active controller: the brokers to place new partitions on:
    /// registered, unfenced, and heard from lately (a broker that just died is not fenced until
    /// its session lapses, but gets no new partitions meanwhile). Ascending.
    fn placeable_brokers(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// Who this broker is in a cluster.
#[derive(Clone, Debug)]
pub struct Membership {
    pub me: u32,
    /// The controller quorum's voters (every broker of a combined-mode cluster), ascending.
    pub voters: Vec<u32>,
}

/// A single broker's metadata log: today's `MetadataStore` (one file, rewritten per change).
pub struct FileLog {
    store: RefCell<Box<dyn MetadataStore>>,
}

impl FileLog {
    pub fn new(store: Box<dyn MetadataStore>) -> FileLog {
        FileLog {
            store: RefCell::new(store),
        }
    }
}

impl MetadataLog for FileLog {
    fn state(&self) -> Ref<'_, MetadataState> {
        Ref::map(self.store.borrow(), |s| s.state())
    }

    /// The next state is prepared here, written on glommio's blocking pool (off this core), then
    /// committed. The controller's turn makes sure nothing else changes the store in between.
    fn submit(&self, cmd: MetadataCommand) -> LocalFuture<'_, Result<Applied, MetaError>> {
        Box::pin(async move {
            let (next, write) = self.store.borrow().prepare(&cmd)?;
            // What the command produced, read off the state it was applied to.
            let applied = match cmd {
                MetadataCommand::AllocateProducerIds { .. } => Applied::ProducerIds {
                    start: self.store.borrow().state().producer_ids_reserved,
                },
                _ => Applied::Done,
            };
            glommio::executor()
                .spawn_blocking(move || write.run())
                .await?;
            self.store.borrow_mut().commit(next);
            Ok(applied)
        })
    }

    fn applies_itself(&self) -> bool {
        false
    }
}

/// What every shard may read of the controller quorum: who leads, the term, how far the log is
/// committed and applied here, and (on the leader) how far each voter has it. Written by the
/// quorum's task on shard 0; read by Metadata and DescribeCluster on any shard.
#[derive(Debug, Default)]
pub struct QuorumStatus {
    /// The voters, ascending.
    pub voters: Vec<u32>,
    leader: std::sync::atomic::AtomicU64,
    term: std::sync::atomic::AtomicU64,
    commit: std::sync::atomic::AtomicU64,
    applied: std::sync::atomic::AtomicU64,
    /// The last term whose leader's first entry was applied here.
    caught_up_term: std::sync::atomic::AtomicU64,
    progress: std::sync::Mutex<Vec<(u64, u64)>>,
}

/// A reading of [`QuorumStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumReading {
    pub voters: Vec<u32>,
    pub leader: Option<u32>,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    /// On the leader: (voter, index of the last entry it holds).
    pub progress: Vec<(u64, u64)>,
}

impl QuorumStatus {
    pub fn new(voters: Vec<u32>) -> QuorumStatus {
        QuorumStatus {
            voters,
            ..Default::default()
        }
    }

    pub fn set(&self, leader: Option<u64>, term: u64, commit: u64, applied: u64) {
        use std::sync::atomic::Ordering::Release;
        self.leader.store(leader.unwrap_or(0), Release);
        self.term.store(term, Release);
        self.commit.store(commit, Release);
        self.applied.store(applied, Release);
    }

    pub fn set_caught_up_term(&self, term: u64) {
        self.caught_up_term
            .fetch_max(term, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether this broker, `me`, is the quorum's leader and its state holds every change
    /// committed before its term: then it is the active controller and checks admin requests.
    pub fn is_active_controller(&self, me: u32) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        self.leader() == Some(me) && self.caught_up_term.load(Acquire) >= self.term.load(Acquire)
    }

    pub fn set_progress(&self, progress: Vec<(u64, u64)>) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }

    /// The leader this broker knows of, if any.
    pub fn leader(&self) -> Option<u32> {
        let id = self.leader.load(std::sync::atomic::Ordering::Acquire);
        u32::try_from(id).ok().filter(|id| *id != 0)
    }

    pub fn read(&self) -> QuorumReading {
        use std::sync::atomic::Ordering::Acquire;
        QuorumReading {
            voters: self.voters.clone(),
            leader: self.leader(),
            term: self.term.load(Acquire),
            commit: self.commit.load(Acquire),
            applied: self.applied.load(Acquire),
            progress: self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
