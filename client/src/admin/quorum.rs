//! The cluster as its active controller sees it: every registered broker (fenced ones too)
//! and the controller quorum (term, committed index, each voter's log end and lag).

use quiver_proto::api::cluster::DescribeClusterRequest;
use quiver_proto::ErrorCode;
use serde::Serialize;

use super::Admin;
use crate::error::{Error, Result};

/// The cluster and its controller quorum, from the active controller
/// ([`Admin::describe_quorum`]). On a single broker: that broker, and no voters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuorumDescription {
    /// The cluster's id.
    pub cluster_id: Option<String>,
    /// The active controller (the quorum's leader).
    pub controller: Option<u32>,
    /// The quorum's term (the metadata log's leader epoch); 0 on a single broker.
    pub term: u64,
    /// The index of the last committed metadata log entry.
    pub committed: u64,
    /// The voters, by id.
    pub voters: Vec<VoterDescription>,
    /// Every registered broker, by id.
    pub brokers: Vec<RegisteredBroker>,
}

/// One voter of the controller quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoterDescription {
    /// Its broker id.
    pub id: u32,
    /// The last metadata log index the leader knows it holds (`None`: not known yet).
    pub log_end: Option<u64>,
    /// Committed entries it lacks.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it (`None` for the leader itself).
    pub last_heard_ms: Option<u64>,
}

/// A broker registered with the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegisteredBroker {
    /// Its id.
    pub id: u32,
    /// The host name or address clients connect to.
    pub host: String,
    /// The QUIC (UDP) port.
    pub port: u16,
    /// Its rack, if configured.
    pub rack: Option<String>,
    /// Shards (cores) it runs.
    pub shards: u16,
    /// Its session lapsed: it leads nothing and clients are not sent to it.
    pub fenced: bool,
    /// The metadata version of its last registration.
    pub epoch: u64,
    /// A controller-only voter: it holds no partitions and clients are not sent to it.
    pub controller_only: bool,
}

impl Admin {
    /// The cluster as the active controller sees it: registered brokers with their racks and
    /// whether they are fenced, and the controller quorum (any broker forwards the request to
    /// the controller).
    pub async fn describe_quorum(&self) -> Result<QuorumDescription> {
        let req = DescribeClusterRequest {
            include_fenced_brokers: true,
        };
        let (resp, _) = self.client.call_any(&req, Vec::new()).await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, resp.error_message));
        }
        Ok(QuorumDescription {
            cluster_id: resp.cluster_id,
            controller: resp.controller_id.map(|c| c.0),
            term: resp.quorum_term,
            committed: resp.quorum_commit,
            voters: resp
                .voters
                .into_iter()
                .map(|v| VoterDescription {
                    id: v.broker_id.0,
                    log_end: v.log_end_offset,
                    lag: v.lag,
                    last_heard_ms: v.last_heard_ms,
                })
                .collect(),
            brokers: resp
                .brokers
                .into_iter()
                .map(|b| RegisteredBroker {
                    id: b.broker_id.0,
                    host: b.host,
                    port: b.port,
                    rack: b.rack,
                    shards: b.shard_count,
                    fenced: b.fenced,
                    epoch: b.broker_epoch,
                    controller_only: b.controller_only,
                })
                .collect(),
        })
    }
}
