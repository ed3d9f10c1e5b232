//! Who a request comes from, and the SASL exchange that says so: the connection's principal
//! (its certificate through the mapping rules, SASL, or `User:ANONYMOUS`), kept in the
//! connection's session; SaslHandshake and SaslAuthenticate.

use std::rc::Rc;

use quiver_net::Request;
use quiver_proto::api::handshake::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use quiver_proto::ErrorCode;
use rand::distributions::{Alphanumeric, DistString};

use crate::runtime::Shard;
use crate::security::principal::ANONYMOUS;
use crate::security::quota::{self, Charge, Throttle};
use crate::security::sasl::{ConnAuth, Round};
use crate::security::Access;

/// The connection's principal and whether its certificate names a broker; `None` when it has
/// not authenticated and anonymous access is off.
fn principal(shard: &Shard, req: &Request) -> Option<(Rc<str>, bool)> {
    let known = req
        .session
        .with(|a: &mut ConnAuth| a.principal.clone().map(|p| (p, a.broker)));
    if known.is_some() {
        return known;
    }
    if let Some(id) = req.identity.as_deref() {
        let broker = crate::identity::broker_named(id);
        let name = match broker {
            Some(b) => Some(format!("User:{}", crate::identity::broker_name(b))),
            None => shard
                .security
                .mapping
                .principal(id.common_name.as_deref(), &id.dns_names),
        };
        if let Some(name) = name {
            let p: Rc<str> = name.into();
            req.session.with(|a: &mut ConnAuth| {
                a.principal = Some(p.clone());
                a.broker = broker.is_some();
            });
            return Some((p, broker.is_some()));
        }
    }
    shard
        .security
        .allow_anonymous
        .then(|| (ANONYMOUS_RC.with(Rc::clone), false))
}

thread_local! {
    /// `User:ANONYMOUS`, made once per shard rather than per request.
    static ANONYMOUS_RC: Rc<str> = Rc::from(ANONYMOUS);
}

/// The request's access, or `None` when the connection must authenticate first.
pub(super) fn access(shard: &Shard, req: &Request) -> Option<Access> {
    let (principal, broker) = principal(shard, req)?;
    Some(Access::new(
        principal,
        req.peer.ip(),
        broker,
        &shard.security,
        shard.snapshot().security.clone(),
    ))
}

pub(super) fn sasl_handshake(
    shard: &Shard,
    req: &Request,
    r: &SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let enabled = &shard.security.mechanisms;
    let error_code = match req
        .session
        .with(|a: &mut ConnAuth| a.handshake(&r.mechanism, enabled))
    {
        Ok(()) => ErrorCode::None,
        Err((code, why)) => {
            tracing::debug!(peer = %req.peer, error = %why, "SASL handshake refused");
            code
        }
    };
    SaslHandshakeResponse {
        error_code,
        mechanisms: enabled.iter().map(|m| m.name().to_string()).collect(),
    }
}

pub(super) fn sasl_authenticate(
    shard: &Shard,
    req: &Request,
    r: &SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let nonce = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
    let security = shard.snapshot().security.clone();
    let round = req.session.with(|a: &mut ConnAuth| {
        a.authenticate(&r.auth_bytes, &nonce, |user, m| {
            Some(security.credential_or_decoy(user, m))
        })
    });
    match round {
        Round::Continue(auth_bytes) => SaslAuthenticateResponse {
            auth_bytes,
            ..Default::default()
        },
        Round::Done { principal, reply } => {
            tracing::debug!(peer = %req.peer, %principal, "authenticated");
            req.session.admit();
            SaslAuthenticateResponse {
                auth_bytes: reply,
                ..Default::default()
            }
        }
        Round::Refused(error_code, message) => {
            tracing::info!(peer = %req.peer, error = %message, "SASL authentication failed");
            shard.metrics.authentication_failed();
            SaslAuthenticateResponse {
                error_code,
                error_message: Some(message),
                ..Default::default()
            }
        }
    }
}

/// Keeps the client id an ApiVersions request gave, for the connection.
pub(super) fn remember_client_id(req: &Request, client_id: Option<String>) {
    if let Some(id) = client_id {
        req.session
            .with(|a: &mut ConnAuth| a.client_id = Some(id.into()));
    }
}

/// The throttle of a request of `bytes` under its principal's and client's quota for `what`
/// (`None` without a quota), having charged it. The quotas are those of the snapshot the
/// request's access was judged by.
pub(super) fn throttle(
    shard: &Shard,
    req: &Request,
    access: &Access,
    what: Charge,
    bytes: u64,
) -> Option<Throttle> {
    let quotas = &access.state().quotas;
    if quotas.is_empty() {
        return None;
    }
    let principal = access.principal();
    let user = principal.strip_prefix("User:").unwrap_or(principal);
    let client_id = req
        .session
        .with(|a: &mut ConnAuth| a.client_id.clone())
        .unwrap_or_else(|| "".into());
    let key = match what {
        Charge::Produce => quota::PRODUCER_BYTE_RATE,
        Charge::Fetch => quota::CONSUMER_BYTE_RATE,
        Charge::RequestTime => quota::REQUEST_PERCENTAGE,
    };
    let (rate, holder) = quota::resolve(quotas, user, &client_id, key)?;
    let rate = match what {
        Charge::RequestTime => rate.saturating_mul(quota::MICROS_PER_PERCENT),
        _ => rate,
    };
    Some(
        shard
            .quota_buckets
            .charge(what, holder, std::time::Instant::now(), bytes, rate),
    )
}
