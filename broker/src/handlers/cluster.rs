//! RaftMessage: a voter's raft messages for this broker's quorum (on shard 0); and
//! DescribeCluster: the brokers and the quorum, answered by the active controller.
//!
//! Bounds on one request: at most `MESSAGES_PER_CALL_MAX` messages, each at most
//! `MESSAGE_BYTES_MAX` and inside the payload (the frame limit bounds the whole); every message
//! must come from the voter the request names, to this broker. Anything else refuses the whole
//! request with `InvalidRequest` before raft sees any of it; a request for another cluster gets
//! `InconsistentClusterId`; one on a connection whose client certificate does not name the
//! voter (`quiver-broker-<id>`, signed by the cluster's CA) gets `ClusterAuthorizationFailed`.
//! Raft's answers travel as requests of their own.

use std::rc::Rc;

use bytes::Bytes;
use quiver_proto::api::cluster::{
    BrokerRegistrationRequest, BrokerRegistrationResponse, DescribeClusterBroker,
    DescribeClusterRequest, DescribeClusterResponse, QuorumVoter, RaftMessageRequest,
    RaftMessageResponse,
};
use quiver_proto::{BrokerId, ErrorCode, ShardId};

use crate::quorum::transport::{decode, MESSAGES_PER_CALL_MAX, MESSAGE_BYTES_MAX};
use crate::runtime::Shard;

pub(super) async fn raft_message(
    shard: &Rc<Shard>,
    req: RaftMessageRequest,
    payload: Bytes,
    identity: Option<&quiver_net::PeerIdentity>,
) -> RaftMessageResponse {
    let refuse = |error_code| RaftMessageResponse { error_code };
    let me = shard.config.broker_id;
    let from = req.from.0;
    let voters = shard
        .quorum
        .as_ref()
        .map(|q| q.voters.clone())
        .unwrap_or_default();
    // Voters, and registered brokers that are not voters (learners, which answer the leader).
    let member = voters.contains(&from) || shard.snapshot().brokers.contains_key(&from);
    if voters.is_empty() || from == me || !member {
        tracing::debug!(
            from,
            "RaftMessage from a broker that is not a member of this quorum"
        );
        return refuse(ErrorCode::InvalidRequest);
    }
    // Only broker `from` itself speaks for it: its certificate (signed by the cluster's CA,
    // checked in the handshake) must name it.
    if !crate::identity::names_broker(identity, from) {
        tracing::debug!(
            from,
            "RaftMessage on a connection whose certificate does not name broker {from}; refused"
        );
        return refuse(ErrorCode::ClusterAuthorizationFailed);
    }
    if req.messages.len() > MESSAGES_PER_CALL_MAX {
        return refuse(ErrorCode::InvalidRequest);
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for r in &req.messages {
        let (start, len) = (r.offset as usize, r.len as usize);
        let Some(bytes) = start
            .checked_add(len)
            .filter(|end| *end <= payload.len() && len <= MESSAGE_BYTES_MAX)
            .map(|end| &payload[start..end])
        else {
            return refuse(ErrorCode::InvalidRequest);
        };
        match decode(bytes) {
            Some(m) if m.from == u64::from(from) && m.to == u64::from(me) => messages.push(m),
            _ => return refuse(ErrorCode::InvalidRequest),
        }
    }
    let cluster_id = req.cluster_id;
    let delivered = shard
        .run_on(ShardId(0), move |_| async move {
            match crate::quorum::on_this_shard() {
                Some(q) => q.deliver(from, &cluster_id, messages).err(),
                None => Some(ErrorCode::BrokerNotAvailable),
            }
        })
        .await;
    match delivered {
        Some(None) => refuse(ErrorCode::None),
        Some(Some(code)) => refuse(code),
        None => refuse(ErrorCode::BrokerShuttingDown),
    }
}

/// DescribeCluster. On a single broker: itself, no quorum. In a cluster the active controller
/// answers (any other broker forwards the request there, as an admin request): only the
/// quorum's leader knows how far each voter has come. Costs one pass over the registered
/// brokers and voters; the request carries one flag.
pub(super) async fn describe_cluster(
    shard: &Rc<Shard>,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let snapshot = shard.snapshot();
    let me = shard.config.broker_id;
    let mut resp = DescribeClusterResponse {
        cluster_id: Some(shard.cluster_id().to_string()),
        ..Default::default()
    };
    if shard.quorum.is_none() {
        resp.controller_id = Some(BrokerId(me));
        resp.quorum_commit = snapshot.version;
        resp.brokers = vec![DescribeClusterBroker {
            broker_id: BrokerId(me),
            host: shard.config.advertised_host(),
            port: shard.listen_port(),
            rack: (!shard.config.rack.is_empty()).then(|| shard.config.rack.clone()),
            shard_count: shard.shard_count() as u16,
            fenced: false,
            broker_epoch: 0,
            controller_only: false,
        }];
        return resp;
    }
    match super::admin::to_active_controller(shard, &req).await {
        Err(why) => {
            resp.error_code = ErrorCode::RequestTimedOut;
            resp.error_message = Some(why);
            return resp;
        }
        Ok(Some(answer)) => return answer,
        Ok(None) => {}
    }
    let view = shard
        .run_on(ShardId(0), |_| async move {
            crate::quorum::on_this_shard().map(|q| q.describe())
        })
        .await
        .flatten();
    let Some(view) = view else {
        resp.error_code = ErrorCode::BrokerShuttingDown;
        return resp;
    };
    resp.controller_id = Some(BrokerId(me));
    resp.quorum_term = view.term;
    resp.quorum_commit = view.commit;
    resp.voters = view
        .voters
        .into_iter()
        .map(|v| QuorumVoter {
            broker_id: BrokerId(v.id),
            log_end_offset: v.log_end,
            lag: v.lag,
            last_heard_ms: v.last_heard_ms,
        })
        .collect();
    resp.brokers = snapshot
        .brokers
        .values()
        .filter(|b| req.include_fenced_brokers || !b.fenced)
        .map(|b| DescribeClusterBroker {
            broker_id: BrokerId(b.id),
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
            shard_count: b.shard_count,
            fenced: b.fenced,
            broker_epoch: b.epoch,
            controller_only: b.controller_only,
        })
        .collect();
    resp
}

/// The longest host or rack name a registration may carry (a DNS name's limit).
const REGISTRATION_NAME_MAX: usize = 253;

/// BrokerRegistration: a broker that is not a voter asks the active controller to register it
/// (then the leader adds it to the quorum as a learner). Only the active controller takes it
/// (others answer NotController; the broker asks each voter in turn), and only from the broker
/// itself: the connection's certificate must name `quiver-broker-<id>`. Voters register through
/// the log themselves and are refused here. One request costs one metadata command; its names
/// are bounded by `REGISTRATION_NAME_MAX`, and only its first listener is read.
pub(super) async fn broker_registration(
    shard: &Rc<Shard>,
    req: BrokerRegistrationRequest,
    identity: Option<&quiver_net::PeerIdentity>,
) -> BrokerRegistrationResponse {
    let refuse = |error_code| BrokerRegistrationResponse {
        error_code,
        ..Default::default()
    };
    let id = req.broker_id.0;
    if !crate::identity::names_broker(identity, id) {
        tracing::debug!(
            broker = id,
            "BrokerRegistration not from broker {id}; refused"
        );
        return refuse(ErrorCode::ClusterAuthorizationFailed);
    }
    let Some(status) = &shard.quorum else {
        return refuse(ErrorCode::InvalidRequest);
    };
    if id == 0 || status.voters.contains(&id) {
        return refuse(ErrorCode::InvalidRequest);
    }
    let Some(listener) = req.listeners.first() else {
        return refuse(ErrorCode::InvalidRequest);
    };
    let rack_ok = req
        .rack
        .as_ref()
        .is_none_or(|r| !r.is_empty() && r.len() <= REGISTRATION_NAME_MAX);
    if listener.host.is_empty()
        || listener.host.len() > REGISTRATION_NAME_MAX
        || listener.port == 0
        || !rack_ok
        || req.shard_count == 0
        || req.shard_count > u32::from(u16::MAX)
    {
        return refuse(ErrorCode::InvalidRequest);
    }
    let ours = shard.cluster_id().to_string();
    if !req.cluster_id.is_empty() && req.cluster_id != ours {
        return refuse(ErrorCode::InconsistentClusterId);
    }
    if !status.is_active_controller(shard.config.broker_id) {
        return refuse(ErrorCode::NotController);
    }
    let me = crate::cluster::meta::BrokerMeta {
        id,
        host: listener.host.clone(),
        port: listener.port,
        rack: req.rack.clone(),
        shard_count: req.shard_count as u16,
        incarnation: req.incarnation_id.0 as u64,
        epoch: 0,
        fenced: false,
        controller_only: false,
        shutting_down: false,
    };
    let registered = shard
        .run_on(ShardId(0), move |_| async move {
            match crate::quorum::on_this_shard() {
                Some(q) => Some(q.register_learner(me).await),
                None => None,
            }
        })
        .await
        .flatten();
    match registered {
        Some(Ok(epoch)) => BrokerRegistrationResponse {
            broker_epoch: epoch,
            ..Default::default()
        },
        Some(Err(e)) => {
            tracing::debug!(broker = id, error = %e, "registration not committed");
            refuse(ErrorCode::RequestTimedOut)
        }
        None => refuse(ErrorCode::BrokerShuttingDown),
    }
}
