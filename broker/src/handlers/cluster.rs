//! RaftMessage: a voter's raft messages for this broker's quorum (on shard 0).
//!
//! Bounds on one request: at most `MESSAGES_PER_CALL_MAX` messages, each at most
//! `MESSAGE_BYTES_MAX` and inside the payload (the frame limit bounds the whole); every message
//! must come from the voter the request names, to this broker. Anything else refuses the whole
//! request with `InvalidRequest` before raft sees any of it; a request for another cluster gets
//! `InconsistentClusterId`. Raft's answers travel as requests of their own.

use std::rc::Rc;

use bytes::Bytes;
use quiver_proto::api::cluster::{RaftMessageRequest, RaftMessageResponse};
use quiver_proto::{ErrorCode, ShardId};

use crate::quorum::transport::{decode, MESSAGES_PER_CALL_MAX, MESSAGE_BYTES_MAX};
use crate::runtime::Shard;

pub(super) async fn raft_message(
    shard: &Rc<Shard>,
    req: RaftMessageRequest,
    payload: Bytes,
) -> RaftMessageResponse {
    let refuse = |error_code| RaftMessageResponse { error_code };
    let me = shard.config.broker_id;
    let from = req.from.0;
    let voters = shard
        .quorum
        .as_ref()
        .map(|q| q.voters.clone())
        .unwrap_or_default();
    if voters.is_empty() || from == me || !voters.contains(&from) {
        tracing::debug!(
            from,
            "RaftMessage from a broker that is not a voter of this quorum"
        );
        return refuse(ErrorCode::InvalidRequest);
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
