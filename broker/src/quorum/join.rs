//! Joining a cluster: the cluster id fixed and this broker registered, through the quorum's
//! log (a voter proposes itself; a broker that is not a voter asks the active controller and is
//! added as a learner), and the topics of a broker that ran alone before carried in first.

use super::*;

impl Quorum {
    /// Whether this broker's data holds topics from a time it ran alone, to carry in.
    fn carries_topics(&self) -> bool {
        self.carry
            .borrow()
            .as_ref()
            .is_some_and(|c| !c.topics.is_empty())
    }

    /// Until the cluster id is fixed and this broker is registered: proposes what is missing,
    /// retrying (and saying so in the log) while the quorum cannot commit. A broker that ran
    /// alone before carries its topics into the cluster first (`carry_over`); the only error is
    /// a topic it cannot carry.
    pub async fn join(self: &Rc<Self>, me: BrokerMeta) -> Result<(), String> {
        if self.learner {
            return self.join_as_learner(me).await;
        }
        if me.controller_only && self.carries_topics() {
            return Err("this data directory holds topics from running alone, and a controller-only voter (process_roles = \"controller\") holds no partitions: start it as \"broker,controller\" to carry them into the cluster, or give it an empty data directory".into());
        }
        let mut last_warning: Option<Instant> = None;
        // A broker with no data of its own proposes the cluster's creation only once a leader
        // has been known for `INIT_DEFER`, so that a broker that ran alone before (and proposes
        // at once) creates the cluster with its topics, committed offsets included.
        let defer = self.carry.borrow().is_none() && self.id_candidate.is_none();
        let mut leader_since: Option<Instant> = None;
        loop {
            if defer && self.state.borrow().cluster_id.is_none() {
                match (self.status.leader(), leader_since) {
                    (None, _) => leader_since = None,
                    (Some(_), None) => leader_since = Some(Instant::now()),
                    (Some(_), Some(_)) => {}
                }
                if leader_since.is_none_or(|t| t.elapsed() < INIT_DEFER) {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let registered = {
                let state = self.state.borrow();
                state.cluster_id.is_some()
                    && state
                        .brokers
                        .get(&self.me)
                        .is_some_and(|b| b.incarnation == me.incarnation)
            };
            if registered {
                return Ok(());
            }
            let outcome = if self.state.borrow().cluster_id.is_none() {
                let candidate = self
                    .id_candidate
                    .clone()
                    .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
                // A broker that ran alone offers its topics with the cluster's creation: if
                // this command is the first, they are the cluster's from its first moment.
                let carried = self.carried_topics().into_values().collect();
                let producer_ids_reserved = self
                    .carry
                    .borrow()
                    .as_ref()
                    .map_or(0, |c| c.producer_ids_reserved);
                self.submit_cmd(MetadataCommand::InitCluster {
                    cluster_id: candidate,
                    carried,
                    producer_ids_reserved,
                })
                .await
                .map(|_| ())
            } else if self.carry.borrow().is_some() {
                self.carry_over().await?
            } else {
                self.submit_cmd(MetadataCommand::RegisterBroker(me.clone()))
                    .await
                    .map(|_| ())
            };
            match outcome {
                Ok(()) | Err(MetaError::ClusterIdMismatch { .. } | MetaError::TopicExists(_)) => {}
                Err(e) => {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        let voters: Vec<String> = self
                            .voters
                            .iter()
                            .map(|v| format!("{}@{}:{}", v.id, v.host, v.port))
                            .collect();
                        tracing::warn!(error = %e, voters = %voters.join(","), "waiting for the controller quorum (a majority of voters must be up and reach each other)");
                        last_warning = Some(Instant::now());
                    }
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// A broker that is not a voter joins by asking the active controller to register it
    /// (`BrokerRegistration`, to each voter in turn until the leader takes it; the others
    /// answer NotController): the controller commits its registration, then adds it to the
    /// quorum as a learner, and it is joined once its own copy of the log shows it registered.
    pub(super) async fn join_as_learner(self: &Rc<Self>, me: BrokerMeta) -> Result<(), String> {
        if self.carries_topics() {
            return Err("this data directory holds topics from running alone, and a broker that is not a voter (process_roles = \"broker\") cannot carry them into a cluster yet: start it as a voter, or give it an empty data directory".into());
        }
        let mut last_asked: Option<Instant> = None;
        let mut last_warning: Option<Instant> = None;
        loop {
            let registered = self
                .state
                .borrow()
                .brokers
                .get(&self.me)
                .is_some_and(|b| b.incarnation == me.incarnation);
            if registered {
                return Ok(());
            }
            if last_asked.is_none_or(|t| t.elapsed() > LEARNER_REGISTER_EVERY) {
                last_asked = Some(Instant::now());
                if let Err(why) = self.ask_registration(&me).await {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(error = %why, "registering with the controller quorum; retrying");
                        last_warning = Some(Instant::now());
                    }
                    last_asked = None;
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                }
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One round of `BrokerRegistration`: the leader this broker knows of first, then every
    /// voter; `Ok` once one took it.
    pub(super) async fn ask_registration(&self, me: &BrokerMeta) -> Result<(), String> {
        use quiver_proto::api::cluster::{
            BrokerRegistrationRequest, BrokerRegistrationResponse, Listener,
        };
        use quiver_proto::api::Message as _;
        let req = BrokerRegistrationRequest {
            broker_id: quiver_proto::BrokerId(self.me),
            cluster_id: self.cluster_id.borrow().clone().unwrap_or_default(),
            incarnation_id: quiver_proto::api::common::Uuid(u128::from(me.incarnation)),
            listeners: vec![Listener {
                name: "client".into(),
                host: me.host.clone(),
                port: me.port,
            }],
            rack: me.rack.clone(),
            shard_count: u32::from(me.shard_count),
        };
        let mut order: Vec<u32> = self.status.leader().into_iter().collect();
        for v in &self.membership.voters {
            if !order.contains(v) {
                order.push(*v);
            }
        }
        let mut why = Vec::new();
        for to in order {
            let header = quiver_proto::api::request_header(
                quiver_proto::api::ApiKey::BrokerRegistration,
                0,
                0,
            );
            let answer = self
                .forward(to, header, req.encode_bytes())
                .await
                .and_then(|frame| {
                    quiver_proto::api::decode_response::<BrokerRegistrationRequest>(&frame)
                        .map_err(|e| e.to_string())
                });
            match answer {
                Ok(BrokerRegistrationResponse {
                    error_code: quiver_proto::ErrorCode::None,
                    ..
                }) => return Ok(()),
                Ok(r) => why.push(format!("broker {to}: {:?}", r.error_code)),
                Err(e) => why.push(e),
            }
        }
        Err(why.join("; "))
    }

    /// On the active controller: registers broker `me`, which is not a voter, as it asked
    /// (`BrokerRegistration`); the leader then adds it to the quorum as a learner. Its epoch.
    pub async fn register_learner(&self, me: BrokerMeta) -> Result<u64, MetaError> {
        let id = me.id;
        self.submit_cmd(MetadataCommand::RegisterBroker(me)).await?;
        Ok(self.state.borrow().brokers.get(&id).map_or(0, |b| b.epoch))
    }

    /// Whether `id` is a voter of this quorum.
    pub fn is_voter(&self, id: u32) -> bool {
        self.membership.voters.contains(&id)
    }

    /// The topics of this broker's time alone, as the cluster will hold them: the same ids,
    /// configs and data, every partition placed on this broker alone.
    pub(super) fn carried_topics(&self) -> BTreeMap<String, TopicMeta> {
        let carry = self.carry.borrow();
        let Some(alone) = carry.as_ref() else {
            return BTreeMap::new();
        };
        alone
            .topics
            .iter()
            .map(|(name, t)| {
                let placed = TopicMeta {
                    replication_factor: 1,
                    placement: (0..t.partitions)
                        .map(|_| PartitionMeta::new(vec![self.me]))
                        .collect(),
                    ..t.clone()
                };
                (name.clone(), placed)
            })
            .collect()
    }

    /// Carries the topics of this broker's time alone into the cluster, one `CreateTopic` each
    /// (those the cluster's first command already carried are skipped), reserves its producer
    /// ids, and then renames `meta/metadata.json` so that this happens once. A topic of the same
    /// name and another id already in the cluster stops the broker with an error naming it;
    /// for the offsets topic, a warning (its committed offsets stay on disk, set aside).
    /// `Ok(Err(_))`: the quorum did not commit; the caller retries.
    pub(super) async fn carry_over(self: &Rc<Self>) -> Result<Result<(), MetaError>, String> {
        let carried = self.carried_topics();
        for (name, t) in &carried {
            let existing = self.state.borrow().topics.get(name).map(|e| e.id.clone());
            match existing {
                Some(id) if id == t.id => continue,
                Some(id) if name == crate::group::OFFSETS_TOPIC => {
                    tracing::warn!(
                        topic = %name,
                        cluster_topic_id = %id,
                        "the cluster made its offsets topic before this broker could carry its own in: the committed offsets of this broker's groups are not carried (its directory is set aside as a stray at the next start, not deleted); consumers of those groups start from auto.offset.reset"
                    );
                    continue;
                }
                Some(id) => {
                    return Err(format!(
                        "carrying this broker's topics into the cluster: topic '{name}' already exists in the cluster (id {id}), and this broker's '{name}' (id {}, {} partitions) is another topic. Nothing of it was carried; rename one of them (delete the cluster's, or move this broker's data away) and start again",
                        t.id, t.partitions
                    ));
                }
                None => {
                    if let Err(e) = self
                        .submit_cmd(MetadataCommand::CreateTopic(t.clone()))
                        .await
                    {
                        return Ok(Err(e));
                    }
                }
            }
        }
        let reserved = self
            .carry
            .borrow()
            .as_ref()
            .map_or(0, |c| c.producer_ids_reserved);
        if reserved > self.state.borrow().producer_ids_reserved {
            if let Err(e) = self
                .submit_cmd(MetadataCommand::ReserveProducerIds { up_to: reserved })
                .await
            {
                return Ok(Err(e));
            }
        }
        let meta = self.data_dir.join("meta");
        let renamed = glommio::executor()
            .spawn_blocking(move || {
                std::fs::rename(
                    meta.join("metadata.json"),
                    meta.join("metadata.json.carried"),
                )?;
                std::fs::File::open(&meta)?.sync_all()
            })
            .await;
        if let Err(e) = renamed {
            return Err(format!(
                "carried this broker's topics into the cluster, but cannot rename meta/metadata.json: {e}"
            ));
        }
        *self.carry.borrow_mut() = None;
        tracing::info!(
            topics = carried.len(),
            "carried this broker's topics into the cluster (meta/metadata.json is now meta/metadata.json.carried)"
        );
        Ok(Ok(()))
    }
}
