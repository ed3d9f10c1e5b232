//! Request handlers: the broker's side of every API, dispatched from the transport's `Service`.
//!
//! Each request runs in its own task on the shard whose endpoint received it. Partition work goes
//! to the owning shard (`Shard::*_on`); admin changes go to the controller on shard 0.

mod admin;
mod fetch;
pub mod group;
mod produce;

use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use quiver_net::{Request, Response, Service};
use quiver_proto::api::{self, AnyRequest, AnyResponse, ApiKey, Message};
use quiver_proto::frame::{FrameError, FrameHeader};
use quiver_proto::ErrorCode;

use crate::shard::{PartError, Shard};

/// The APIs this broker serves today; ApiVersions lists exactly these, and the others are
/// refused with a message saying so.
pub const SERVED: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::FindCoordinator,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::DeleteGroups,
    ApiKey::InitProducerId,
];

/// The transport's view of a shard.
pub struct Handler {
    pub shard: Rc<Shard>,
}

impl Service for Handler {
    fn call(&self, req: Request) -> impl Future<Output = Response> + 'static {
        let shard = self.shard.clone();
        async move { handle(&shard, req).await }
    }

    fn reject(&self, header: Option<FrameHeader>, err: &FrameError) -> Option<Response> {
        // Without a readable header the answer names no API (all ones), which also makes the
        // ErrorResponse list every supported API.
        let header = header.unwrap_or(FrameHeader {
            api_key: u16::MAX,
            api_version: 0,
            correlation_id: 0,
            flags: 0,
        });
        self.shard.metrics.request(header.api_key, true);
        let e = api::error_response(
            header.api_key,
            ErrorCode::for_frame_error(err),
            &err.to_string(),
        );
        Some(Response {
            header: api::response_header(&header, true),
            body: e.encode_bytes(),
            payload: Vec::new(),
        })
    }
}

/// What a handler produces: the response body, the payload chunks, and whether it failed
/// (for the error counter).
pub(crate) struct Answer {
    body: AnyResponse,
    payload: Vec<Bytes>,
    failed: bool,
}

impl Answer {
    fn ok(body: impl Into<AnyResponse>) -> Answer {
        Answer {
            body: body.into(),
            payload: Vec::new(),
            failed: false,
        }
    }
}

async fn handle(shard: &Rc<Shard>, req: Request) -> Response {
    let started = Instant::now();
    let header = req.header;
    let request = match api::decode_request(&header, &req.body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(peer = %req.peer, error = %e, "request refused");
            shard.metrics.request(header.api_key, true);
            return error_response(&header, e.error_code(), &e.to_string());
        }
    };
    let api = request.api();
    let answer = match request {
        AnyRequest::ApiVersions(_) => Answer::ok(admin::api_versions(shard)),
        AnyRequest::Metadata(r) => Answer::ok(admin::metadata(shard, r).await),
        AnyRequest::Produce(r) => produce::handle(shard, r, req.payload).await,
        AnyRequest::Fetch(r) => fetch::handle(shard, r).await,
        AnyRequest::ListOffsets(r) => Answer::ok(fetch::list_offsets(shard, r).await),
        AnyRequest::CreateTopics(r) => {
            admin::change(shard, crate::controller::AdminOp::CreateTopics(r)).await
        }
        AnyRequest::DeleteTopics(r) => {
            admin::change(shard, crate::controller::AdminOp::DeleteTopics(r)).await
        }
        AnyRequest::CreatePartitions(r) => {
            admin::change(shard, crate::controller::AdminOp::CreatePartitions(r)).await
        }
        AnyRequest::IncrementalAlterConfigs(r) => {
            admin::change(shard, crate::controller::AdminOp::AlterConfigs(r)).await
        }
        AnyRequest::DescribeConfigs(r) => Answer::ok(admin::describe_configs(shard, r)),
        AnyRequest::InitProducerId(r) => {
            admin::change(shard, crate::controller::AdminOp::InitProducerId(r)).await
        }
        AnyRequest::FindCoordinator(r) => Answer::ok(group::find_coordinator(shard, r)),
        AnyRequest::ConsumerGroupHeartbeat(r) => {
            let resp = group::heartbeat(shard, r, req.peer.ip().to_string()).await;
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::OffsetCommit(r) => Answer::ok(group::commit(shard, r).await),
        AnyRequest::OffsetFetch(r) => Answer::ok(group::fetch(shard, r).await),
        AnyRequest::DescribeGroups(r) => Answer::ok(group::describe(shard, r).await),
        AnyRequest::ListGroups(r) => Answer::ok(group::list(shard, r).await),
        AnyRequest::DeleteGroups(r) => Answer::ok(group::delete(shard, r).await),
        other => {
            shard.metrics.request(header.api_key, true);
            return error_response(
                &header,
                ErrorCode::InvalidRequest,
                &format!(
                    "{} is not served by this broker yet (see ApiVersions for what is)",
                    other.api().name()
                ),
            );
        }
    };
    let elapsed = started.elapsed();
    match api {
        ApiKey::Produce => shard.metrics.produce_latency.record(elapsed),
        ApiKey::Fetch => shard.metrics.fetch_latency.record(elapsed),
        _ => {}
    }
    shard.metrics.request(header.api_key, answer.failed);
    Response {
        header: api::response_header(&header, false),
        body: Bytes::from(answer.body.encode()),
        payload: answer.payload,
    }
}

fn error_response(header: &FrameHeader, code: ErrorCode, message: &str) -> Response {
    let e = api::error_response(header.api_key, code, message);
    Response {
        header: api::response_header(header, true),
        body: e.encode_bytes(),
        payload: Vec::new(),
    }
}

/// The protocol's error code for a failed partition operation, with a message.
pub(crate) fn part_error(e: &PartError) -> (ErrorCode, String) {
    use quiver_engine::{Error as E, SequenceError};
    let code = match e {
        PartError::NotHosted => ErrorCode::UnknownTopicOrPartition,
        PartError::Failed(_) => ErrorCode::StorageError,
        PartError::ShuttingDown => ErrorCode::BrokerShuttingDown,
        PartError::Engine(e) => match e {
            E::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            E::DiskFull { .. } => ErrorCode::DiskFull,
            E::AppendTooLarge { .. } => ErrorCode::RecordListTooLarge,
            E::InvalidConfig(_) => ErrorCode::InvalidConfig,
            E::Closed => ErrorCode::NotLeaderOrFollower,
            E::Corrupt { .. } | E::Io { .. } | E::Discarded(_) => ErrorCode::StorageError,
            E::Sequence { kind, .. } => match kind {
                SequenceError::OutOfOrder => ErrorCode::OutOfOrderSequence,
                SequenceError::Duplicate => ErrorCode::DuplicateSequence,
                SequenceError::InvalidEpoch => ErrorCode::InvalidProducerEpoch,
            },
            #[allow(unreachable_patterns)]
            _ => ErrorCode::StorageError,
        },
    };
    (code, e.to_string())
}
