//! The apply task: the committed metadata log applied, in order, to the `MetadataState`, then
//! to every shard of this broker (`Shard::broadcast_apply`), before the proposer hears its
//! outcome; a task of its own, so the raft driver never waits for the shards.

use super::*;

impl Quorum {
    /// The apply task: committed entries in log order, one `Ready`'s worth at a time; read
    /// barriers wake as their index is applied.
    pub(super) async fn apply_committed(
        self: Rc<Self>,
        mut committed: mpsc::UnboundedReceiver<Vec<Apply>>,
    ) {
        while let Some(items) = committed.next().await {
            let started = Instant::now();
            let count = items.len();
            self.apply(items).await;
            self.wake_reads();
            let took = started.elapsed();
            if took >= SLOW_APPLY {
                tracing::warn!(
                    entries = count,
                    applied = self.applied.get(),
                    took_ms = took.as_millis() as u64,
                    "applying committed metadata was slow (every shard opens and closes its logs)"
                );
            }
        }
    }

    /// Applies committed entries and snapshots in order; then every shard takes the new
    /// snapshot, deleted topics' files go, and the proposers hear their outcomes.
    pub(super) async fn apply(&self, items: Vec<Apply>) {
        let Some(shard) = self.shard.get() else {
            return;
        };
        let before = shard.snapshot();
        let mut deleted: Vec<Arc<TopicInfo>> = Vec::new();
        let mut outcomes = Vec::new();
        let version = self.state.borrow().version;
        for a in items {
            match a {
                Apply::Snapshot { index, data, .. } => match decode_state(&data) {
                    Ok(next) => {
                        for (name, t) in &self.state.borrow().topics {
                            if next.topics.get(name).map(|n| &n.id) != Some(&t.id) {
                                if let Some(info) = before.topic(name) {
                                    deleted.push(info.clone());
                                }
                            }
                        }
                        *self.state.borrow_mut() = next;
                        self.applied.set(index);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a controller quorum snapshot does not decode; stopping");
                        std::process::exit(70);
                    }
                },
                Apply::Entry { index, term, data } => {
                    self.applied.set(index);
                    if data.is_empty() {
                        // Each leader's first entry of its term: once it is applied here, a
                        // leader's state holds everything committed before its term began.
                        self.status.set_caught_up_term(term);
                    }
                    let Some(p) = decode_proposal(&data) else {
                        continue;
                    };
                    if let Some(decided) = p.leader_term.filter(|t| *t != term) {
                        tracing::info!(
                            decided,
                            term,
                            "a former quorum leader's decision committed in a later term: refused"
                        );
                        outcomes.push((
                            p.id,
                            Err(MetaError::Stale(format!(
                                "decided by the quorum's leader of term {decided}, committed in term {term}"
                            ))),
                        ));
                        continue;
                    }
                    if let MetadataCommand::DeleteTopic { name } = &p.cmd {
                        if let Some(info) = before.topic(name) {
                            if self.state.borrow().topics.get(name).map(|t| &t.id)
                                == Some(&info.meta.id)
                            {
                                deleted.push(info.clone());
                            }
                        }
                    }
                    let result = self.state.borrow_mut().apply(&p.cmd);
                    if let Err(e) = &result {
                        tracing::debug!(error = %e, "committed metadata command refused by the state machine");
                    }
                    outcomes.push((p.id, result));
                }
            }
        }
        if let Err(message) = self.check_cluster_id() {
            tracing::error!("{message}");
            std::process::exit(78);
        }
        if self.state.borrow().version != version || !deleted.is_empty() {
            // Built under a short borrow: the state is not held across the broadcast.
            let built = {
                let state = self.state.borrow();
                self.producer_ids.raise(state.producer_ids_reserved);
                Snapshot::build(&state, &self.defaults, self.me)
            };
            match built {
                Ok(snapshot) => {
                    shard
                        .broadcast_apply(Arc::new(snapshot), deleted.clone())
                        .await;
                    remove_deleted_dirs(&self.data_dir, &deleted);
                }
                Err(e) => tracing::error!(error = %e, "committed topic config does not resolve"),
            }
        }
        for (id, result) in outcomes {
            let waiter = self.waiters.borrow_mut().remove(&id);
            if let Some(w) = waiter {
                let _ = w.send(result);
            }
        }
    }

    /// Once the log fixes the cluster id: records it in `meta/cluster.id` on first sight, and
    /// refuses to go on if this broker's data belongs to another cluster.
    pub(super) fn check_cluster_id(&self) -> Result<(), String> {
        let Some(committed) = self.state.borrow().cluster_id.clone() else {
            return Ok(());
        };
        let known = self.cluster_id.borrow().clone();
        match known {
            Some(ours) if ours == committed => Ok(()),
            Some(ours) if cluster_id_file(&self.data_dir).exists() => Err(format!(
                "this broker's data directory belongs to cluster {ours}, but the controller quorum's cluster is {committed}: refusing to join. Give this broker an empty data directory to join cluster {committed}"
            )),
            _ => {
                crate::identity::write_cluster_id(&self.data_dir, &committed)
                    .map_err(|e| format!("recording the cluster id: {e}"))?;
                *self.cluster_id.borrow_mut() = Some(committed.clone());
                if let Some(shard) = self.shard.get() {
                    let id: Arc<str> = committed.into();
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        shard.broadcast_cluster_id(id).await;
                    })
                    .detach();
                }
                Ok(())
            }
        }
    }
}
