//! Security: who is asking (`principal`, `sasl`), what they may do (`acl`), and what the
//! cluster stores for it (`users`). ARCHITECTURE.md, "Security", has the map: where a
//! principal comes from, where each check is, what is stored where.
//!
//! This module knows nothing of shards or handlers: the handlers build an [`Access`] per
//! request from the connection's principal, the broker's [`SecurityConfig`] and the metadata
//! snapshot's [`SecurityState`], and ask it.

pub mod acl;
pub mod principal;
pub mod quota;
pub mod sasl;
pub mod users;
pub mod wire;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::scram::{Credential, Mechanism};

use acl::{AclIndex, Operation, ResourceType};
use principal::MappingRules;
use users::StoredCredential;

/// The broker's security settings, from its configuration.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// SASL mechanisms clients may authenticate with.
    pub mechanisms: Vec<Mechanism>,
    /// Connections that neither authenticate nor present a certificate are `User:ANONYMOUS`
    /// (`true`), or may make no request but ApiVersions and SASL's (`false`).
    pub allow_anonymous: bool,
    /// ACLs decide every request (`true`); without, every principal may do everything.
    pub authorizer: bool,
    /// Principals the authorizer always allows.
    pub super_users: Vec<String>,
    pub mapping: MappingRules,
    /// With anonymous access off, a connection not authenticated this long after it opened
    /// is closed.
    pub authentication_timeout: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            mechanisms: Vec::new(),
            allow_anonymous: true,
            authorizer: false,
            super_users: Vec::new(),
            mapping: MappingRules::default(),
            authentication_timeout: Duration::from_secs(10),
        }
    }
}

impl SecurityConfig {
    pub fn from_config(c: &crate::config::Config) -> Result<SecurityConfig, String> {
        let mut mechanisms = Vec::new();
        for name in c
            .sasl_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let m = Mechanism::from_name(name).ok_or_else(|| {
                format!("sasl_mechanisms: '{name}' is not one of SCRAM-SHA-256, SCRAM-SHA-512")
            })?;
            if !mechanisms.contains(&m) {
                mechanisms.push(m);
            }
        }
        let super_users: Vec<String> = c
            .super_users
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if let Some(bad) = super_users
            .iter()
            .find(|u| !u.starts_with("User:") || u.len() == 5)
        {
            return Err(format!(
                "super_users: '{bad}' is not of the form User:<name>"
            ));
        }
        let mapping = MappingRules::parse(&c.ssl_principal_mapping_rules)
            .map_err(|e| format!("ssl_principal_mapping_rules: {e}"))?;
        let has_client_ca = !c.tls_client_ca.as_os_str().is_empty();
        if !c.allow_anonymous && mechanisms.is_empty() && !has_client_ca {
            return Err(
                "allow_anonymous = false needs a way to authenticate: set sasl_mechanisms \
                 (e.g. \"SCRAM-SHA-512\") or tls_client_ca"
                    .into(),
            );
        }
        Ok(SecurityConfig {
            mechanisms,
            allow_anonymous: c.allow_anonymous,
            authorizer: c.authorizer,
            super_users,
            mapping,
            authentication_timeout: Duration::from_millis(c.authentication_timeout_ms.max(1)),
        })
    }
}

/// What the metadata holds for security, as each shard reads it: users' credentials and the
/// ACLs, indexed.
#[derive(Debug, Default)]
pub struct SecurityState {
    pub users: BTreeMap<String, BTreeMap<String, StoredCredential>>,
    /// The SCRAM decoy secret (`users::decoy_key`).
    pub decoy_key: Vec<u8>,
    pub acls: AclIndex,
    pub quotas: Vec<quota::QuotaConfig>,
    /// Some quota sets `request_percentage`: requests' running time is measured.
    pub request_time_quotas: bool,
}

impl SecurityState {
    /// `user`'s credential for `mechanism`, if it has one.
    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.users
            .get(user)?
            .get(mechanism.name())?
            .credential(mechanism)
    }

    /// `user`'s credential for `mechanism`, or the decoy that answers alike when it has none.
    pub fn credential_or_decoy(&self, user: &str, mechanism: Mechanism) -> Credential {
        self.credential(user, mechanism)
            .unwrap_or_else(|| Credential::decoy(mechanism, &self.decoy_key, user))
    }
}

/// One request's right to act: its principal and client address, judged by the ACLs.
#[derive(Clone)]
pub struct Access {
    principal: Rc<str>,
    /// The client's address (ACLs name hosts as text: made once, when a decision needs it).
    host: std::net::IpAddr,
    host_text: std::cell::OnceCell<String>,
    /// The authorizer is off, or the principal is a super user: everything is allowed.
    everything: bool,
    state: Arc<SecurityState>,
}

impl Access {
    /// `broker`: the peer's certificate names a broker of this cluster (checked by the
    /// handshake against the cluster's CA): brokers are super users, since they forward
    /// requests they authorized themselves, and replicate.
    pub fn new(
        principal: Rc<str>,
        host: std::net::IpAddr,
        broker: bool,
        config: &SecurityConfig,
        state: Arc<SecurityState>,
    ) -> Access {
        let everything =
            !config.authorizer || broker || config.super_users.iter().any(|u| **u == *principal);
        // A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d; ACLs name a.b.c.d.
        let host = match host {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        Access {
            principal,
            host,
            host_text: std::cell::OnceCell::new(),
            everything,
            state,
        }
    }

    /// Everything allowed, as `User:ANONYMOUS` (the requests a connection makes before it
    /// authenticates, which need no right; tests), with the metadata's `state` (its quotas).
    pub fn unrestricted(state: Arc<SecurityState>) -> Access {
        Access {
            principal: principal::ANONYMOUS.into(),
            host: std::net::Ipv4Addr::UNSPECIFIED.into(),
            host_text: std::cell::OnceCell::new(),
            everything: true,
            state,
        }
    }

    /// The metadata's security state this request is judged by.
    pub fn state(&self) -> &SecurityState {
        &self.state
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    fn host_text(&self) -> &str {
        self.host_text.get_or_init(|| self.host.to_string())
    }

    /// Whether this request may do `op` on resource `name` of type `kind`.
    pub fn allows(&self, op: Operation, kind: ResourceType, name: &str) -> bool {
        self.everything
            || self
                .state
                .acls
                .allows(&self.principal, self.host_text(), op, kind, name)
    }

    pub fn topic(&self, op: Operation, name: &str) -> bool {
        self.allows(op, ResourceType::Topic, name)
    }

    pub fn group(&self, op: Operation, name: &str) -> bool {
        self.allows(op, ResourceType::Group, name)
    }

    pub fn cluster(&self, op: Operation) -> bool {
        self.allows(op, ResourceType::Cluster, acl::CLUSTER_NAME)
    }

    /// Whether this request may do `op` on some topic (InitProducerId's Write on any topic).
    pub fn any_topic(&self, op: Operation) -> bool {
        self.everything
            || self.state.acls.allows_any(
                &self.principal,
                &self.host.to_string(),
                op,
                ResourceType::Topic,
            )
    }
}
