//! Replication at run time, on every shard of a cluster's broker:
//!
//! - `fetcher.rs`: this shard's follower replicas copy their leaders' batches: one task per
//!   leader broker fetches every partition this shard follows it for (`ReplicaFetch`, long
//!   polled), checks and appends the batches as stored (`PartitionLog::append_replica`), cuts a
//!   diverging suffix first (KIP-320), and fetches again once what it appended is durable (so
//!   its next fetch offset tells the leader what it holds on disk).
//! - `isr.rs`: for the partitions this shard leads, proposes ISR changes through the metadata
//!   log (`AlterIsr`): a follower not caught up for `replica_lag_time_max_ms` leaves, one
//!   caught up with the high watermark comes back.
//!
//! The leader's side of a fetch is `handlers::replica` and `runtime::replica_fetch`; the state
//! both sides keep per partition is `runtime::replica`; who leads is decided by the metadata
//! state machine (`cluster::election`).

mod fetcher;
mod isr;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Shard;

/// Longest a call to a leader may take: its long poll plus room for a large answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts this shard's fetchers and ISR keeper, from a client endpoint of the shard's own bound
/// on `local_ip` (answers to a dial from the listeners' socket group would be hashed to another
/// shard). `tls` presents this broker's certificate, which the leaders check.
pub fn start(
    shard: Rc<Shard>,
    local_ip: IpAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let config = quiver_net::EndpointConfig {
        call_timeout: CALL_TIMEOUT,
        frame_bytes_max: shard.config.max_frame_bytes as usize,
        ..quiver_net::EndpointConfig::default()
    };
    let endpoint = quiver_net::Endpoint::builder(SocketAddr::new(local_ip, 0))
        .config(config)
        .client(tls)
        .bind()
        .map_err(|e| format!("binding the replication endpoint on {local_ip}: {e}"))?;
    let endpoint = Rc::new(endpoint);
    glommio::spawn_local(fetcher::manage(shard.clone(), endpoint)).detach();
    glommio::spawn_local(isr::maintain(shard)).detach();
    Ok(())
}
