//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as sans-IO state machines: the
//! messages of one exchange in, the messages to answer out, no I/O and no randomness (the
//! caller gives the nonces and salts), so both sides are checked against the RFC's test vector.
//!
//! What travels, as in Kafka (which carries these messages in SaslAuthenticate):
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt, base64>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<proof, base64>
//! server-final  v=<server signature, base64>        (or e=<error>)
//! ```
//!
//! What is checked: the GS2 header (no channel binding: "n,," or "y,,"; "p=" is refused, and
//! so is an authorization identity), the user name's escapes (`=2C`, `=3D`), that the final
//! nonce is exactly the one the server made, the channel binding echoed, the proof (compared in
//! constant time), and on the client the server's signature and an iteration count within
//! [`ITERATIONS_MIN`, `ITERATIONS_MAX`]. Every message is at most [`MESSAGE_BYTES_MAX`]. A server
//! exchange is consumed by its last step, so a replayed client-final meets no state.
//!
//! What is stored for a user ([`Credential`]): salt, iterations, StoredKey and ServerKey; never
//! the password, and nothing a client could log in with.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// The fewest PBKDF2 iterations a credential may use (RFC 7677 recommends at least 4096).
pub const ITERATIONS_MIN: u32 = 4096;
/// The most iterations a client accepts from a server: bounds what a hostile server (or a
/// forged credential) can make a client compute.
pub const ITERATIONS_MAX: u32 = 1 << 20;
/// The longest SCRAM message either side accepts.
pub const MESSAGE_BYTES_MAX: usize = 1024;
/// The longest user name.
pub const USER_BYTES_MAX: usize = 255;
/// The iteration count clients use for a new credential unless told otherwise (twice RFC
/// 7677's minimum, as Kafka's tools use), and the one a decoy answers with.
pub const ITERATIONS_DEFAULT: u32 = 8192;
/// The salt length clients use for a new credential, and the one a decoy answers with.
pub const SALT_BYTES_DEFAULT: usize = 32;
/// The shortest salt a credential may have.
pub const SALT_BYTES_MIN: usize = 16;
/// The longest salt a credential may have.
pub const SALT_BYTES_MAX: usize = 64;

/// Hi(password, salt, iterations) of RFC 5802: what a client sends to set a credential
/// (AlterUserScramCredentials), so that the password itself never leaves it.
pub fn salted_password(
    mechanism: Mechanism,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    mechanism.salted_password(password, salt, iterations)
}

/// The two mechanisms, by their SASL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The length of this mechanism's hash (and of a salted password).
    pub fn hash_len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                data.iter().for_each(|d| mac.update(d));
                mac.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
                data.iter().for_each(|d| mac.update(d));
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi() of RFC 5802: PBKDF2 with this mechanism's HMAC.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
            Mechanism::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// Why an exchange failed. Each says what was wrong without saying whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM message of {0} bytes, over the limit of {MESSAGE_BYTES_MAX}")]
    TooLong(usize),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("an authorization identity different from the user is not supported")]
    AuthzId,
    #[error("the nonce does not match this exchange")]
    Nonce,
    #[error("authentication failed: invalid user name or password")]
    Failed,
    #[error("the server's signature is wrong: it does not know this user's credential")]
    ServerSignature,
    #[error("{0} iterations is outside [{ITERATIONS_MIN}, {ITERATIONS_MAX}]")]
    Iterations(u32),
    #[error("the server refused: {0}")]
    Refused(String),
}

/// What the server keeps for one user and mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The credential for `password` with `salt` (random, 16 bytes or more, from the caller).
    pub fn new(
        mechanism: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Credential, ScramError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let salted = mechanism.salted_password(password, salt, iterations);
        Credential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// The credential from a salted password (`salted_password`), as AlterUserScramCredentials
    /// carries it: the server never sees the password. Checks the iteration count, the salt's
    /// length ([`SALT_BYTES_MIN`] to [`SALT_BYTES_MAX`]) and the salted password's (the
    /// mechanism's hash length).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: &[u8],
        iterations: u32,
        salted: &[u8],
    ) -> Result<Credential, ScramError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        if !(SALT_BYTES_MIN..=SALT_BYTES_MAX).contains(&salt.len()) {
            return Err(ScramError::Malformed("a salt must have 16 to 64 bytes"));
        }
        if salted.len() != mechanism.hash_len() {
            return Err(ScramError::Malformed(
                "a salted password must be as long as the mechanism's hash",
            ));
        }
        let client_key = mechanism.hmac(salted, &[b"Client Key"]);
        Ok(Credential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted, &[b"Server Key"]),
        })
    }
}

impl Credential {
    /// What a server answers with for a user it does not have (or not for this mechanism):
    /// a salt, iteration count and keys derived from `secret` (a server secret, the same on
    /// every server of a cluster) and the user name, so that the same missing user always
    /// gets the same salt, shaped as a default new credential's (`SALT_BYTES_DEFAULT`,
    /// `ITERATIONS_DEFAULT`), and no password opens it. Without it, a client could tell a
    /// missing user by its salt (RFC 5802 section 9 leaves this to the server).
    pub fn decoy(mechanism: Mechanism, secret: &[u8], user: &str) -> Credential {
        let derive = |label: &[u8]| mechanism.hmac(secret, &[label, user.as_bytes()]);
        let mut salt = derive(b"quiver scram decoy salt");
        salt.resize(SALT_BYTES_DEFAULT, 0);
        Credential {
            mechanism,
            salt,
            iterations: ITERATIONS_DEFAULT,
            stored_key: derive(b"quiver scram decoy stored key"),
            server_key: derive(b"quiver scram decoy server key"),
        }
    }
}

fn check_len(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(ScramError::TooLong(message.len()));
    }
    std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// `key=value` attribute `key` at the start of `part`.
fn attr(part: Option<&str>, key: char) -> Result<&str, ScramError> {
    let part = part.ok_or(ScramError::Malformed("an attribute is missing"))?;
    let mut chars = part.chars();
    if chars.next() != Some(key) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("an attribute is out of place"));
    }
    Ok(&part[2..])
}

/// A nonce: printable ASCII but ','.
fn check_nonce(nonce: &str) -> Result<(), ScramError> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(ScramError::Malformed("a nonce is empty or not printable"));
    }
    Ok(())
}

fn decode_user(saslname: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(saslname.len());
    let mut rest = saslname;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("a user name has a bad escape")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() || out.len() > USER_BYTES_MAX {
        return Err(ScramError::Malformed("a user name is empty or too long"));
    }
    Ok(out)
}

fn encode_user(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// The server's side of one exchange, after the client's first message.
#[derive(Debug)]
pub struct ServerExchange {
    credential: Credential,
    user: String,
    gs2_header: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// The server reads the client's first message; `lookup` gives the user's credential for this
/// mechanism, or for a user without one a decoy (`Credential::decoy`): the exchange then
/// fails like a wrong password's, and nothing in it tells the user is missing. `server_nonce`: printable, fresh per exchange, from the caller.
/// Returns the exchange and the server-first message.
pub fn server_first(
    mechanism: Mechanism,
    client_first: &[u8],
    server_nonce: &str,
    lookup: impl FnOnce(&str) -> Option<Credential>,
) -> Result<(ServerExchange, Vec<u8>), ScramError> {
    let text = check_len(client_first)?;
    check_nonce(server_nonce)?;
    // gs2-header: cbind-flag "," [authzid] ","
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("a GS2 header")),
    }
    let authzid = parts.next().ok_or(ScramError::Malformed("a GS2 header"))?;
    let bare = parts
        .next()
        .ok_or(ScramError::Malformed("no client-first-bare"))?;
    let mut fields = bare.split(',');
    let user = decode_user(attr(fields.next(), 'n')?)?;
    if !authzid.is_empty() && decode_user(attr(Some(authzid), 'a')?)? != user {
        return Err(ScramError::AuthzId);
    }
    let client_nonce = attr(fields.next(), 'r')?;
    check_nonce(client_nonce)?;
    if fields.next().is_some() {
        return Err(ScramError::Malformed("extensions are not supported"));
    }
    let credential = match lookup(&user) {
        Some(c) if c.mechanism == mechanism => c,
        // Go on with a credential no password matches. The caller should give a decoy
        // (`Credential::decoy`, keyed by a server secret), which looks like a real user's;
        // this unkeyed one tells a missing user to whoever computes it.
        _ => Credential::decoy(mechanism, b"", &user),
    };
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        B64.encode(&credential.salt),
        credential.iterations
    );
    let gs2_header = format!("{flag},{authzid},");
    let exchange = ServerExchange {
        credential,
        user,
        gs2_header,
        nonce,
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
    };
    Ok((exchange, server_first.into_bytes()))
}

impl ServerExchange {
    /// The user this exchange is for (authenticated only once `finish` succeeds).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server reads the client's final message: on a valid proof, the authenticated user
    /// and the server-final message. Consumes the exchange: nothing can be tried twice.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let text = check_len(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = attr(fields.next(), 'c')?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        if attr(fields.next(), 'r')? != self.nonce {
            return Err(ScramError::Nonce);
        }
        if fields.next().is_some() {
            return Err(ScramError::Malformed("extensions are not supported"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("the proof is not base64"))?;
        let m = self.credential.mechanism;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = m.hmac(&self.credential.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != signature.len() || self.credential.stored_key.is_empty() {
            return Err(ScramError::Failed);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !bool::from(m.hash(&client_key).ct_eq(&self.credential.stored_key)) {
            return Err(ScramError::Failed);
        }
        let server_signature = m.hmac(&self.credential.server_key, &[auth_message.as_bytes()]);
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

/// The client's side of one exchange, after its first message.
#[derive(Debug)]
pub struct ClientExchange {
    mechanism: Mechanism,
    client_nonce: String,
    client_first_bare: String,
}

/// The client's first message for `user`; `client_nonce`: printable, fresh per exchange.
pub fn client_first(
    mechanism: Mechanism,
    user: &str,
    client_nonce: &str,
) -> Result<(ClientExchange, Vec<u8>), ScramError> {
    check_nonce(client_nonce)?;
    if user.is_empty() || user.len() > USER_BYTES_MAX {
        return Err(ScramError::Malformed("a user name is empty or too long"));
    }
    let bare = format!("n={},r={client_nonce}", encode_user(user));
    let exchange = ClientExchange {
        mechanism,
        client_nonce: client_nonce.to_string(),
        client_first_bare: bare.clone(),
    };
    Ok((exchange, format!("n,,{bare}").into_bytes()))
}

/// The client after its final message: it checks the server's signature.
#[derive(Debug)]
pub struct ClientFinal {
    mechanism: Mechanism,
    server_key: Vec<u8>,
    auth_message: String,
}

impl ClientExchange {
    /// The client reads the server's first message and proves it knows `password`: the
    /// client-final message.
    pub fn respond(
        self,
        server_first: &[u8],
        password: &str,
    ) -> Result<(ClientFinal, Vec<u8>), ScramError> {
        let text = check_len(server_first)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Refused(e.to_string()));
        }
        let mut fields = text.split(',');
        let nonce = attr(fields.next(), 'r')?;
        check_nonce(nonce)?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = B64
            .decode(attr(fields.next(), 's')?)
            .map_err(|_| ScramError::Malformed("the salt is not base64"))?;
        let iterations: u32 = attr(fields.next(), 'i')?
            .parse()
            .map_err(|_| ScramError::Malformed("the iteration count"))?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let m = self.mechanism;
        let salted = m.salted_password(password, &salt, iterations);
        let client_key = m.hmac(&salted, &[b"Client Key"]);
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = m.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let client_final = format!("{without_proof},p={}", B64.encode(proof));
        let next = ClientFinal {
            mechanism: m,
            server_key: m.hmac(&salted, &[b"Server Key"]),
            auth_message,
        };
        Ok((next, client_final.into_bytes()))
    }
}

impl ClientFinal {
    /// The client reads the server's final message: `Ok` only if the server proved it holds
    /// this user's credential.
    pub fn verify(self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = check_len(server_final)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Refused(e.to_string()));
        }
        let got = B64
            .decode(attr(Some(text), 'v')?)
            .map_err(|_| ScramError::Malformed("the signature is not base64"))?;
        let want = self
            .mechanism
            .hmac(&self.server_key, &[self.auth_message.as_bytes()]);
        if bool::from(got.ct_eq(&want)) {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
    const C_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const S_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> Credential {
        let salt = B64.decode(SALT_B64).unwrap();
        Credential::new(Mechanism::Sha256, "pencil", &salt, 4096).unwrap()
    }

    #[test]
    fn a_credential_from_the_salted_password_is_the_one_from_the_password() {
        let salt = B64.decode(SALT_B64).unwrap();
        for m in Mechanism::ALL {
            let salted = salted_password(m, "pencil", &salt, 4096);
            assert_eq!(salted.len(), m.hash_len());
            let from_salted = Credential::from_salted_password(m, &salt, 4096, &salted).unwrap();
            assert_eq!(
                from_salted,
                Credential::new(m, "pencil", &salt, 4096).unwrap()
            );
        }
        // (salt bytes, iterations, salted password bytes): each refused.
        let refused = [
            (15, 4096, 32),
            (65, 4096, 32),
            (16, 4095, 32),
            (16, 4096, 31),
        ];
        for (salt, iterations, salted) in refused {
            let r = Credential::from_salted_password(
                Mechanism::Sha256,
                &vec![1; salt],
                iterations,
                &vec![2; salted],
            );
            assert!(r.is_err(), "{salt} {iterations} {salted}");
        }
    }

    #[test]
    fn a_decoy_looks_like_a_default_credential_and_opens_to_no_password() {
        for m in Mechanism::ALL {
            let d = Credential::decoy(m, b"secret", "mallory");
            assert_eq!(
                d,
                Credential::decoy(m, b"secret", "mallory"),
                "the same every time"
            );
            assert_ne!(d.salt, Credential::decoy(m, b"other", "mallory").salt);
            assert_ne!(d.salt, Credential::decoy(m, b"secret", "eve").salt);
            assert_eq!(
                (d.salt.len(), d.iterations),
                (SALT_BYTES_DEFAULT, ITERATIONS_DEFAULT)
            );
            let (client, first) = client_first(m, "mallory", "cnonce").unwrap();
            let (server, sfirst) = server_first(m, &first, "snonce", |_| Some(d.clone())).unwrap();
            let (_, fin) = client.respond(&sfirst, "any password").unwrap();
            assert_eq!(server.finish(&fin).unwrap_err(), ScramError::Failed);
        }
    }

    #[test]
    fn both_sides_produce_the_rfc_7677_messages() {
        let (client, first) = client_first(Mechanism::Sha256, "user", C_NONCE).unwrap();
        assert_eq!(first, CLIENT_FIRST.as_bytes());
        let cred = rfc_credential();
        let (server, sfirst) = server_first(Mechanism::Sha256, &first, S_NONCE, |u| {
            (u == "user").then(|| cred.clone())
        })
        .unwrap();
        assert_eq!(sfirst, SERVER_FIRST.as_bytes());
        let (client, cfinal) = client.respond(&sfirst, "pencil").unwrap();
        assert_eq!(std::str::from_utf8(&cfinal).unwrap(), CLIENT_FINAL);
        let (user, sfinal) = server.finish(&cfinal).unwrap();
        assert_eq!(
            (user.as_str(), sfinal.as_slice()),
            ("user", SERVER_FINAL.as_bytes())
        );
        client.verify(&sfinal).unwrap();
    }

    /// One exchange, both sides, for `mech`: the server's outcome and the client's verdict.
    fn exchange(
        mech: Mechanism,
        stored: &Credential,
        user: &str,
        password: &str,
    ) -> (Result<String, ScramError>, Option<Result<(), ScramError>>) {
        let (client, first) = client_first(mech, user, "clientnonce123").unwrap();
        let (server, sfirst) = server_first(mech, &first, "servernonce456", |u| {
            (u == "alice").then(|| stored.clone())
        })
        .unwrap();
        let (client, cfinal) = client.respond(&sfirst, password).unwrap();
        match server.finish(&cfinal) {
            Ok((u, sfinal)) => (Ok(u), Some(client.verify(&sfinal))),
            Err(e) => (Err(e), None),
        }
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_nothing_else() {
        for mech in Mechanism::ALL {
            let cred = Credential::new(mech, "s3cret, =x", b"0123456789abcdef", 4096).unwrap();
            let (ok, verified) = exchange(mech, &cred, "alice", "s3cret, =x");
            assert_eq!(ok, Ok("alice".to_string()), "{mech:?}");
            assert_eq!(verified, Some(Ok(())));
            assert_eq!(
                exchange(mech, &cred, "alice", "s3cret").0,
                Err(ScramError::Failed)
            );
            // A user that does not exist fails the same way, at the same step.
            assert_eq!(
                exchange(mech, &cred, "mallory", "s3cret, =x").0,
                Err(ScramError::Failed)
            );
        }
        // A credential of the other mechanism is no credential.
        let sha512 = Credential::new(Mechanism::Sha512, "pw", b"0123456789abcdef", 4096).unwrap();
        assert_eq!(
            exchange(Mechanism::Sha256, &sha512, "alice", "pw").0,
            Err(ScramError::Failed)
        );
    }

    #[test]
    fn user_names_round_trip_their_escapes() {
        for user in ["a,b", "a=b", "=,=2C", "plain"] {
            let (_, first) = client_first(Mechanism::Sha256, user, "n1").unwrap();
            let mut seen = String::new();
            server_first(Mechanism::Sha256, &first, "n2", |u| {
                seen = u.to_string();
                None
            })
            .unwrap();
            assert_eq!(seen, user);
        }
    }

    /// Lying and broken messages, to the server: each is refused with the reason.
    #[test]
    fn the_server_refuses_what_does_not_follow_the_exchange() {
        let cred = rfc_credential();
        let lookup = |_: &str| Some(cred.clone());
        let first_cases: &[(&[u8], ScramError)] = &[
            (b"p=tls-unique,,n=user,r=abc", ScramError::ChannelBinding),
            (b"x,,n=user,r=abc", ScramError::Malformed("a GS2 header")),
            (b"n,a=other,n=user,r=abc", ScramError::AuthzId),
            (
                b"n,,n=us=2Xer,r=abc",
                ScramError::Malformed("a user name has a bad escape"),
            ),
            (
                b"n,,n=,r=abc",
                ScramError::Malformed("a user name is empty or too long"),
            ),
            (
                b"n,,r=abc,n=user",
                ScramError::Malformed("an attribute is out of place"),
            ),
            (
                b"n,,n=user",
                ScramError::Malformed("an attribute is missing"),
            ),
            (
                b"n,,n=user,r=a b",
                ScramError::Malformed("a nonce is empty or not printable"),
            ),
            (
                b"n,,n=user,r=abc,m=ext",
                ScramError::Malformed("extensions are not supported"),
            ),
            (b"n,,n=\xff,r=abc", ScramError::Malformed("not UTF-8")),
            (
                b"n,,",
                ScramError::Malformed("an attribute is out of place"),
            ),
            (b"", ScramError::Malformed("a GS2 header")),
        ];
        for (msg, want) in first_cases {
            let got = server_first(Mechanism::Sha256, msg, S_NONCE, lookup).unwrap_err();
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(msg));
        }
        let long = vec![b'a'; MESSAGE_BYTES_MAX + 1];
        assert_eq!(
            server_first(Mechanism::Sha256, &long, S_NONCE, lookup).unwrap_err(),
            ScramError::TooLong(MESSAGE_BYTES_MAX + 1)
        );

        let proof = CLIENT_FINAL.rsplit_once(",p=").unwrap().1;
        let other_nonce = format!("c=biws,r={C_NONCE}other,p={proof}");
        let bad_binding = CLIENT_FINAL.replace("c=biws", "c=eSws");
        let bad_proof = format!("c=biws,r={C_NONCE}{S_NONCE},p=!!");
        let wrong_proof = CLIENT_FINAL.replace("dHzb", "dHza");
        let final_cases: Vec<(&str, ScramError)> = vec![
            (&other_nonce, ScramError::Nonce),
            (&bad_binding, ScramError::ChannelBinding),
            (&wrong_proof, ScramError::Failed),
            ("c=biws,r=x", ScramError::Malformed("no proof")),
            (&bad_proof, ScramError::Malformed("the proof is not base64")),
            (
                "c=biws,p=AAAA",
                ScramError::Malformed("an attribute is missing"),
            ),
            ("c=biws,r=x,p=AAAA", ScramError::Nonce),
        ];
        for (msg, want) in final_cases {
            let (server, _) =
                server_first(Mechanism::Sha256, CLIENT_FIRST.as_bytes(), S_NONCE, lookup).unwrap();
            assert_eq!(server.finish(msg.as_bytes()).unwrap_err(), want, "{msg}");
        }
        // A truncated proof: the right bytes, cut short.
        let (server, _) =
            server_first(Mechanism::Sha256, CLIENT_FIRST.as_bytes(), S_NONCE, lookup).unwrap();
        let short = &CLIENT_FINAL[..CLIENT_FINAL.len() - 8];
        assert!(server.finish(short.as_bytes()).is_err());
    }

    /// Lying messages, to the client: a nonce it did not start, too few or too many
    /// iterations, a forged server signature, an error from the server.
    #[test]
    fn the_client_refuses_a_server_that_does_not_know_the_credential() {
        let client = || client_first(Mechanism::Sha256, "user", C_NONCE).unwrap().0;
        let cases: Vec<(String, ScramError)> = vec![
            (
                format!("r=someoneelse,s={SALT_B64},i=4096"),
                ScramError::Nonce,
            ),
            (
                format!("r={C_NONCE},s={SALT_B64},i=4096"),
                ScramError::Nonce,
            ),
            (
                format!("r={C_NONCE}x,s={SALT_B64},i=1"),
                ScramError::Iterations(1),
            ),
            (
                format!("r={C_NONCE}x,s={SALT_B64},i=4000000000"),
                ScramError::Iterations(4_000_000_000),
            ),
            (
                format!("r={C_NONCE}x,s=@@,i=4096"),
                ScramError::Malformed("the salt is not base64"),
            ),
            (
                "e=unknown-user".to_string(),
                ScramError::Refused("unknown-user".into()),
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(
                client().respond(msg.as_bytes(), "pencil").unwrap_err(),
                want,
                "{msg}"
            );
        }
        let (fin, _) = client().respond(SERVER_FIRST.as_bytes(), "pencil").unwrap();
        assert_eq!(
            fin.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .unwrap_err(),
            ScramError::ServerSignature
        );
        let (fin, _) = client().respond(SERVER_FIRST.as_bytes(), "pencil").unwrap();
        assert_eq!(
            fin.verify(b"e=invalid-proof").unwrap_err(),
            ScramError::Refused("invalid-proof".into())
        );
    }

    #[test]
    fn credentials_refuse_weak_iteration_counts() {
        assert_eq!(
            Credential::new(Mechanism::Sha512, "pw", b"salt", 4095).unwrap_err(),
            ScramError::Iterations(4095)
        );
        let c = rfc_credential();
        assert_eq!(c.stored_key.len(), 32);
        assert_ne!(c.stored_key, c.server_key);
    }
}
