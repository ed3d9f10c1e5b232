//! One connection's SASL authentication as a sans-IO state machine: SaslHandshake chooses a
//! mechanism, then two SaslAuthenticate rounds carry SCRAM's messages (`proto::scram`). Once,
//! per connection, before other requests (Kafka's order); a connection that failed stays
//! failed (the client opens another), and one that succeeded cannot start again.

use quiver_proto::scram::{self, Credential, Mechanism, ServerExchange};
use quiver_proto::ErrorCode;

#[derive(Debug, Default)]
enum Stage {
    #[default]
    Start,
    Chosen(Mechanism),
    Exchanging(Box<ServerExchange>),
    Done,
    Failed,
}

/// What the broker keeps for one connection: its principal once known, and where its SASL
/// exchange stands.
#[derive(Debug, Default)]
pub struct ConnAuth {
    /// `User:<name>` once authenticated (by SASL or a certificate).
    pub principal: Option<std::rc::Rc<str>>,
    /// The principal came from a certificate that names a broker of this cluster.
    pub broker: bool,
    /// The application's client id, as its ApiVersions said (quotas, logs).
    pub client_id: Option<std::rc::Rc<str>>,
    stage: Stage,
}

/// The outcome of one SaslAuthenticate round.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// Send these bytes; the exchange goes on.
    Continue(Vec<u8>),
    /// Authenticated as this principal; send these bytes (the server's proof).
    Done { principal: String, reply: Vec<u8> },
    /// Refused: the code and message to answer with.
    Refused(ErrorCode, String),
}

impl ConnAuth {
    /// SaslHandshake: chooses `mechanism`, one of `enabled`.
    pub fn handshake(
        &mut self,
        mechanism: &str,
        enabled: &[Mechanism],
    ) -> Result<(), (ErrorCode, String)> {
        if !matches!(self.stage, Stage::Start) || self.principal.is_some() {
            return Err((
                ErrorCode::IllegalSaslState,
                "this connection has already authenticated or tried to; open a new one".into(),
            ));
        }
        match Mechanism::from_name(mechanism).filter(|m| enabled.contains(m)) {
            Some(m) => {
                self.stage = Stage::Chosen(m);
                Ok(())
            }
            None => Err((
                ErrorCode::UnsupportedSaslMechanism,
                format!(
                    "mechanism '{}' is not enabled; this broker accepts: {}",
                    mechanism.chars().take(64).collect::<String>(),
                    enabled
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// SaslAuthenticate: the next round. `nonce`: fresh and printable, used by the first round;
    /// `lookup`: a user's credential for a mechanism.
    pub fn authenticate(
        &mut self,
        bytes: &[u8],
        nonce: &str,
        lookup: impl FnOnce(&str, Mechanism) -> Option<Credential>,
    ) -> Round {
        match std::mem::replace(&mut self.stage, Stage::Failed) {
            Stage::Chosen(m) => match scram::server_first(m, bytes, nonce, |u| lookup(u, m)) {
                Ok((exchange, reply)) => {
                    self.stage = Stage::Exchanging(Box::new(exchange));
                    Round::Continue(reply)
                }
                Err(e) => Round::Refused(ErrorCode::SaslAuthenticationFailed, e.to_string()),
            },
            Stage::Exchanging(exchange) => match exchange.finish(bytes) {
                Ok((user, reply)) => {
                    let principal = format!("User:{user}");
                    self.principal = Some(principal.as_str().into());
                    self.stage = Stage::Done;
                    Round::Done { principal, reply }
                }
                Err(e) => Round::Refused(ErrorCode::SaslAuthenticationFailed, e.to_string()),
            },
            other => {
                // Out of order: the state stays what it was (a finished exchange stays done).
                let message = match other {
                    Stage::Start => "SaslAuthenticate before SaslHandshake",
                    Stage::Done => "this connection has already authenticated",
                    _ => "this connection failed to authenticate; open a new one",
                };
                self.stage = other;
                Round::Refused(ErrorCode::IllegalSaslState, message.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::scram::client_first;

    const ENABLED: &[Mechanism] = &[Mechanism::Sha256, Mechanism::Sha512];

    fn credential(m: Mechanism) -> Credential {
        Credential::new(m, "secret", &[7u8; 16], 4096).unwrap()
    }

    fn lookup(user: &str, m: Mechanism) -> Option<Credential> {
        (user == "alice").then(|| credential(m))
    }

    /// Runs an exchange for `user` with `password`; returns the last round.
    fn exchange(auth: &mut ConnAuth, m: Mechanism, user: &str, password: &str) -> Round {
        auth.handshake(m.name(), ENABLED).unwrap();
        let (client, first) = client_first(m, user, "cnonce").unwrap();
        let Round::Continue(server_first) = auth.authenticate(&first, "snonce", lookup) else {
            panic!("first round refused");
        };
        let (client, fin) = client.respond(&server_first, password).unwrap();
        let round = auth.authenticate(&fin, "unused", lookup);
        if let Round::Done { reply, .. } = &round {
            client.verify(reply).unwrap();
        }
        round
    }

    #[test]
    fn a_right_password_authenticates_and_a_wrong_one_does_not() {
        for m in Mechanism::ALL {
            let mut auth = ConnAuth::default();
            let round = exchange(&mut auth, m, "alice", "secret");
            assert!(matches!(&round, Round::Done { principal, .. } if principal == "User:alice"));
            assert_eq!(auth.principal.as_deref(), Some("User:alice"));

            for (user, password) in [("alice", "wrong"), ("mallory", "secret")] {
                let mut auth = ConnAuth::default();
                let round = exchange(&mut auth, m, user, password);
                assert!(
                    matches!(
                        round,
                        Round::Refused(ErrorCode::SaslAuthenticationFailed, _)
                    ),
                    "{user}: {round:?}"
                );
                assert_eq!(auth.principal, None);
                // Failed for good: no second try on this connection.
                assert!(auth.handshake(m.name(), ENABLED).is_err());
            }
        }
    }

    #[test]
    fn rounds_out_of_order_are_refused() {
        let mut auth = ConnAuth::default();
        // Before the handshake.
        let r = auth.authenticate(b"n,,n=alice,r=x", "s", lookup);
        assert!(matches!(r, Round::Refused(ErrorCode::IllegalSaslState, _)));
        // A mechanism not enabled, or unknown.
        let e = auth
            .handshake("SCRAM-SHA-512", &[Mechanism::Sha256])
            .unwrap_err();
        assert_eq!(e.0, ErrorCode::UnsupportedSaslMechanism);
        assert_eq!(
            auth.handshake("PLAIN", ENABLED).unwrap_err().0,
            ErrorCode::UnsupportedSaslMechanism
        );
        // After success: a replayed final message and a new handshake are refused, and the
        // principal stays.
        let mut auth = ConnAuth::default();
        auth.handshake("SCRAM-SHA-256", ENABLED).unwrap();
        let (client, first) = client_first(Mechanism::Sha256, "alice", "cnonce").unwrap();
        let Round::Continue(sf) = auth.authenticate(&first, "snonce", lookup) else {
            panic!()
        };
        let (_, fin) = client.respond(&sf, "secret").unwrap();
        assert!(matches!(
            auth.authenticate(&fin, "x", lookup),
            Round::Done { .. }
        ));
        let r = auth.authenticate(&fin, "x", lookup);
        assert!(matches!(r, Round::Refused(ErrorCode::IllegalSaslState, _)));
        assert!(auth.handshake("SCRAM-SHA-256", ENABLED).is_err());
        assert_eq!(auth.principal.as_deref(), Some("User:alice"));
    }

    #[test]
    fn a_truncated_or_garbled_message_fails_the_exchange() {
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,n=alice",
            b"p=tls,,n=alice,r=x",
            &[0xff, 0xfe][..],
        ] {
            let mut auth = ConnAuth::default();
            auth.handshake("SCRAM-SHA-256", ENABLED).unwrap();
            let r = auth.authenticate(bad, "snonce", lookup);
            assert!(
                matches!(r, Round::Refused(ErrorCode::SaslAuthenticationFailed, _)),
                "{bad:?}"
            );
            assert!(auth.principal.is_none());
        }
        // A final message of another exchange (its nonce) is refused.
        let mut auth = ConnAuth::default();
        auth.handshake("SCRAM-SHA-256", ENABLED).unwrap();
        let (_, first) = client_first(Mechanism::Sha256, "alice", "cnonce").unwrap();
        let Round::Continue(_) = auth.authenticate(&first, "snonce", lookup) else {
            panic!()
        };
        let (other, _) = client_first(Mechanism::Sha256, "alice", "cnonce").unwrap();
        let (_, fin) = other
            .respond(b"r=cnonceOTHER,s=BwcHBwcHBwcHBwcHBwcHBw==,i=4096", "secret")
            .unwrap();
        let r = auth.authenticate(&fin, "x", lookup);
        assert!(
            matches!(r, Round::Refused(ErrorCode::SaslAuthenticationFailed, _)),
            "{r:?}"
        );
    }
}
