//! Request handlers: the broker's side of every API, dispatched from the transport's `Service`.
//!
//! Each request runs in its own task on the shard whose endpoint received it. Partition work goes
//! to the owning shard (`Shard::*_on`); admin changes go to the controller on shard 0.

mod admin;
mod auth;
mod authz;
mod cluster;
mod common;
mod fetch;
mod group;
mod produce;
mod replica;
mod security;

pub use admin::change as admin_change;

use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use quiver_net::{Request, Response, Service};
use quiver_proto::api::{self, AnyRequest, AnyResponse, ApiKey, Message};
use quiver_proto::frame::{FrameError, FrameHeader};
use quiver_proto::ErrorCode;

use crate::cluster::controller::AdminOp;
use crate::runtime::Shard;
use crate::security::acl::Operation;
use crate::security::quota::{Charge, Throttle};
use crate::security::Access;
use common::Answer;
pub use common::SERVED;

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
    // Who asks: ApiVersions and the SASL exchange need nobody; everything else needs a
    // principal (a connection that must authenticate first is told so).
    let access = match auth::access(shard, &req) {
        Some(a) => a,
        None if matches!(
            api,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        ) =>
        {
            Access::unrestricted(shard.snapshot().security.clone())
        }
        None => {
            shard.metrics.request(header.api_key, true);
            let mechanisms: Vec<&str> =
                shard.security.mechanisms.iter().map(|m| m.name()).collect();
            return error_response(
                &header,
                ErrorCode::AuthenticationRequired,
                &format!(
                    "this broker requires authentication before {}: SASL ({}) or a client certificate",
                    api.name(),
                    if mechanisms.is_empty() { "none enabled".to_string() } else { mechanisms.join(", ") }
                ),
            );
        }
    };
    // Broker to broker: ClusterAction on the cluster (brokers have it; see `security`).
    if matches!(
        api,
        ApiKey::BrokerRegistration | ApiKey::RaftMessage | ApiKey::ReplicaFetch
    ) && !access.cluster(Operation::ClusterAction)
    {
        shard.metrics.denied();
        shard.metrics.request(header.api_key, true);
        return error_response(
            &header,
            ErrorCode::ClusterAuthorizationFailed,
            &format!(
                "{} is broker to broker: {} may not call it",
                api.name(),
                access.principal()
            ),
        );
    }
    // With a request-time quota in force (`request_percentage`), the time the request's own
    // task runs on this shard is measured and charged.
    let timed = access.state().request_time_quotas;
    let served = dispatch(shard, &req, request, &access);
    let (served, busy) = if timed {
        Timed::new(served).await
    } else {
        (served.await, std::time::Duration::ZERO)
    };
    let mut answer = match served {
        Ok(a) => a,
        Err(response) => return response,
    };
    if timed {
        let micros = busy.as_micros().min(u128::from(u64::MAX)) as u64;
        let throttle = auth::throttle(shard, &req, &access, Charge::RequestTime, micros);
        hold(throttle).await;
        set_throttle(&mut answer.body, throttle_ms(throttle));
    }
    let elapsed = started.elapsed();
    match api {
        ApiKey::Produce => shard.metrics.produce_latency.record(elapsed),
        ApiKey::Fetch => shard.metrics.fetch_latency.record(elapsed),
        _ => {}
    }
    let failed = answer.failed;
    let (response, over) = framed(
        &header,
        answer.body,
        answer.payload,
        shard.config.max_frame_bytes as usize,
    );
    if let Some(bytes) = over {
        tracing::warn!(peer = %req.peer, api = %api, bytes, max = shard.config.max_frame_bytes, "response over the frame limit; answering with an error");
    }
    shard
        .metrics
        .request(header.api_key, failed || over.is_some());
    response
}

/// The API's handler for a decoded request, authorized by `access`; `Err`: a refusal to send
/// as it is.
async fn dispatch(
    shard: &Rc<Shard>,
    req: &Request,
    request: AnyRequest,
    access: &Access,
) -> Result<Answer, Response> {
    let header = req.header;
    let answer = match request {
        AnyRequest::ApiVersions(r) => {
            auth::remember_client_id(req, r.client_id);
            Answer::ok(admin::api_versions(shard))
        }
        AnyRequest::SaslHandshake(r) => {
            let resp = auth::sasl_handshake(shard, req, &r);
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::SaslAuthenticate(r) => {
            let resp = auth::sasl_authenticate(shard, req, &r);
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::Metadata(r) => Answer::ok(admin::metadata(shard, r, access).await),
        AnyRequest::Produce(r) => {
            // Held back before it is appended, so a client that ignores the throttle time
            // gains nothing (`security::quota`).
            let bytes = req.payload.len() as u64;
            let throttle = auth::throttle(shard, req, access, Charge::Produce, bytes);
            hold(throttle).await;
            let mut answer = produce::handle(shard, r, req.payload.clone(), access).await;
            if let AnyResponse::Produce(resp) = &mut answer.body {
                resp.throttle_time_ms = throttle_ms(throttle);
            }
            answer
        }
        AnyRequest::Fetch(r) => {
            let mut answer = fetch::handle(shard, r, access).await;
            // Charged what it carries, and its answer held back: the consumer's next fetch
            // comes no sooner.
            let bytes: u64 = answer.payload.iter().map(|b| b.len() as u64).sum();
            let throttle = auth::throttle(shard, req, access, Charge::Fetch, bytes);
            hold(throttle).await;
            if let AnyResponse::Fetch(resp) = &mut answer.body {
                resp.throttle_time_ms = throttle_ms(throttle);
            }
            answer
        }
        AnyRequest::ListOffsets(r) => Answer::ok(fetch::list_offsets(shard, r, access).await),
        AnyRequest::CreateTopics(r) => authz::admin(shard, access, AdminOp::CreateTopics(r)).await,
        AnyRequest::DeleteTopics(r) => authz::admin(shard, access, AdminOp::DeleteTopics(r)).await,
        AnyRequest::CreatePartitions(r) => {
            authz::admin(shard, access, AdminOp::CreatePartitions(r)).await
        }
        AnyRequest::IncrementalAlterConfigs(r) => {
            authz::admin(shard, access, AdminOp::AlterConfigs(r)).await
        }
        AnyRequest::AlterPartitionReassignments(r) => {
            authz::admin(shard, access, AdminOp::Reassign(r)).await
        }
        AnyRequest::DescribeConfigs(r) => Answer::ok(admin::describe_configs(shard, r, access)),
        AnyRequest::InitProducerId(r) => {
            authz::admin(shard, access, AdminOp::InitProducerId(r)).await
        }
        AnyRequest::CreateAcls(r) => authz::admin(shard, access, AdminOp::CreateAcls(r)).await,
        AnyRequest::DeleteAcls(r) => authz::admin(shard, access, AdminOp::DeleteAcls(r)).await,
        AnyRequest::AlterUserScramCredentials(r) => {
            authz::admin(shard, access, AdminOp::AlterScram(r)).await
        }
        AnyRequest::DescribeAcls(r) => {
            let resp = security::describe_acls(shard, r, access);
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::AlterClientQuotas(r) => {
            authz::admin(shard, access, AdminOp::AlterQuotas(r)).await
        }
        AnyRequest::DescribeClientQuotas(r) => {
            let resp = security::describe_quotas(shard, r, access);
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::DescribeUserScramCredentials(r) => {
            let resp = security::describe_users(shard, r, access);
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::FindCoordinator(r) => Answer::ok(group::find_coordinator(shard, r, access)),
        AnyRequest::ConsumerGroupHeartbeat(r) => {
            let resp = group::heartbeat(shard, r, req.peer.ip().to_string(), access).await;
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::OffsetCommit(r) => Answer::ok(group::commit(shard, r, access).await),
        AnyRequest::OffsetFetch(r) => Answer::ok(group::fetch(shard, r, access).await),
        AnyRequest::DescribeGroups(r) => Answer::ok(group::describe(shard, r, access).await),
        AnyRequest::ListGroups(r) => Answer::ok(group::list(shard, r, access).await),
        AnyRequest::DeleteGroups(r) => Answer::ok(group::delete(shard, r, access).await),
        AnyRequest::BrokerRegistration(r) => {
            let resp = cluster::broker_registration(shard, r, req.identity.as_deref()).await;
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::DescribeCluster(r) => {
            let resp = if access.cluster(Operation::Describe) {
                cluster::describe_cluster(shard, r).await
            } else {
                shard.metrics.denied();
                quiver_proto::api::cluster::DescribeClusterResponse {
                    error_code: ErrorCode::ClusterAuthorizationFailed,
                    error_message: Some(format!(
                        "{} may not describe the cluster",
                        access.principal()
                    )),
                    ..Default::default()
                }
            };
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        AnyRequest::ReplicaFetch(r) => {
            replica::replica_fetch(shard, r, req.identity.as_deref()).await
        }
        AnyRequest::RaftMessage(r) => {
            let resp =
                cluster::raft_message(shard, r, req.payload.clone(), req.identity.as_deref()).await;
            let failed = resp.error_code != ErrorCode::None;
            Answer {
                body: resp.into(),
                payload: Vec::new(),
                failed,
            }
        }
        other => {
            shard.metrics.request(header.api_key, true);
            return Err(error_response(
                &header,
                ErrorCode::InvalidRequest,
                &format!(
                    "{} is not served by this broker yet (see ApiVersions for what is)",
                    other.api().name()
                ),
            ));
        }
    };
    Ok(answer)
}

/// A future, and the time spent polling it (its task's own running time on this shard).
struct Timed<F: Future> {
    inner: std::pin::Pin<Box<F>>,
    busy: std::time::Duration,
}

impl<F: Future> Timed<F> {
    fn new(inner: F) -> Timed<F> {
        Timed {
            inner: Box::pin(inner),
            busy: std::time::Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, std::time::Duration);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let started = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.busy += started.elapsed();
        polled.map(|out| (out, self.busy))
    }
}

/// Raises a response's `throttle_time_ms` to `ms` (a request-time quota's hold, beside a byte
/// rate's).
fn set_throttle(body: &mut AnyResponse, ms: u32) {
    macro_rules! raise {
        ($($api:ident),*) => {
            match body {
                $( AnyResponse::$api(r) => r.throttle_time_ms = r.throttle_time_ms.max(ms), )*
                _ => {}
            }
        };
    }
    raise!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        CreateTopics,
        DeleteTopics,
        CreatePartitions,
        DescribeConfigs,
        IncrementalAlterConfigs,
        AlterPartitionReassignments,
        InitProducerId,
        FindCoordinator,
        OffsetCommit,
        OffsetFetch,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        DescribeCluster,
        CreateAcls,
        DescribeAcls,
        DeleteAcls,
        AlterClientQuotas,
        DescribeClientQuotas,
        DescribeUserScramCredentials,
        AlterUserScramCredentials
    );
}

/// Holds a request back for its quota's wait.
async fn hold(throttle: Option<Throttle>) {
    if let Some(t) = throttle.filter(|t| !t.wait.is_zero()) {
        glommio::timer::sleep(t.wait).await;
    }
}

/// The throttle time to answer with, now.
fn throttle_ms(throttle: Option<Throttle>) -> u32 {
    throttle.map_or(0, |t| {
        let left = t.time_at(Instant::now());
        u32::try_from(left.as_millis()).unwrap_or(u32::MAX)
    })
}

/// The response frame for `body` and `payload`, or, when it would exceed `frame_max`, an
/// `InvalidRequest` error response instead (and the size it would have had).
///
/// The last line of defence: each API bounds its own answer (fetch_max_bytes, the entry limit
/// and name lengths of `proto::api::limits`, one broker's configs per DescribeConfigs), so no
/// request is known to get here. If one does, its client gets an error it can read rather than
/// a frame it would refuse, and the transport never meets a frame it cannot send.
fn framed(
    header: &FrameHeader,
    body: AnyResponse,
    payload: Vec<Bytes>,
    frame_max: usize,
) -> (Response, Option<usize>) {
    let body = Bytes::from(body.encode());
    let payload_bytes: usize = payload.iter().map(Bytes::len).sum();
    let frame_bytes = quiver_proto::frame::FRAME_HEADER_BYTES + body.len() + payload_bytes;
    if frame_bytes > frame_max {
        let e = error_response(
            header,
            ErrorCode::InvalidRequest,
            &format!(
                "the response would be {frame_bytes} bytes, over the {frame_max}-byte frame limit; ask for fewer partitions or bytes"
            ),
        );
        return (e, Some(frame_bytes));
    }
    (
        Response {
            header: api::response_header(header, false),
            body,
            payload,
        },
        None,
    )
}

fn error_response(header: &FrameHeader, code: ErrorCode, message: &str) -> Response {
    let e = api::error_response(header.api_key, code, message);
    Response {
        header: api::response_header(header, true),
        body: e.encode_bytes(),
        payload: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::api::fetch::FetchResponse;

    #[test]
    fn an_answer_over_the_frame_limit_becomes_an_error_response() {
        let header = FrameHeader {
            api_key: ApiKey::Fetch.as_u16(),
            api_version: 0,
            correlation_id: 5,
            flags: 0,
        };
        let body = || AnyResponse::Fetch(FetchResponse::default());
        // (payload bytes, frame limit, answered with the error?)
        let cases = [
            (0, 1 << 20, false),
            (1000, 1 << 20, false),
            (2 << 20, 1 << 20, true),
        ];
        for (payload, max, refused) in cases {
            let (resp, over) = framed(&header, body(), vec![Bytes::from(vec![0u8; payload])], max);
            assert_eq!(over.is_some(), refused, "{payload} of {max}");
            assert_eq!(resp.header.is_error_response(), refused);
            assert!(resp.wire_len() <= max);
            assert_eq!(resp.header.correlation_id, 5);
            if refused {
                let e = quiver_proto::api::ErrorResponse::decode(&resp.body).unwrap();
                assert_eq!(e.error_code, ErrorCode::InvalidRequest);
                assert!(e.message.unwrap().contains("frame limit"));
                assert!(resp.payload.is_empty());
            }
        }
    }
}
