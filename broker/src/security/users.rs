//! SCRAM credentials as the cluster metadata keeps them: per user and mechanism, the salt,
//! iteration count, StoredKey and ServerKey of RFC 5802 (hex), never a password.

use quiver_proto::scram::{Credential, Mechanism};
use serde::{Deserialize, Serialize};

/// Most users the metadata holds: bounds what one broker keeps in memory and what
/// DescribeUserScramCredentials answers.
pub const USERS_MAX: usize = 10_000;

/// One user's credential for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    pub salt: String,
    pub iterations: u32,
    pub stored_key: String,
    pub server_key: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl StoredCredential {
    pub fn from_credential(c: &Credential) -> StoredCredential {
        StoredCredential {
            salt: hex(&c.salt),
            iterations: c.iterations,
            stored_key: hex(&c.stored_key),
            server_key: hex(&c.server_key),
        }
    }

    /// The credential for `mechanism`; `None` if the stored text is damaged (the user then
    /// cannot log in, as with a wrong password).
    pub fn credential(&self, mechanism: Mechanism) -> Option<Credential> {
        Some(Credential {
            mechanism,
            salt: unhex(&self.salt)?,
            iterations: self.iterations,
            stored_key: unhex(&self.stored_key)?,
            server_key: unhex(&self.server_key)?,
        })
    }
}

/// A fresh decoy secret (32 random bytes, hex) for `MetadataState::scram_decoy_key`.
pub fn new_decoy_key() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    hex(&key)
}

/// The decoy secret's bytes: the cluster's, or with none yet (no user exists, so there is
/// nothing to hide) one made for this process.
pub fn decoy_key(stored: Option<&str>) -> Vec<u8> {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = stored.unwrap_or_else(|| PROCESS.get_or_init(new_decoy_key));
    unhex(text).unwrap_or_else(|| text.as_bytes().to_vec())
}

/// A user name SCRAM can carry: 1 to 255 bytes, printable, no control characters.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > quiver_proto::scram::USER_BYTES_MAX {
        return Err(format!(
            "a user name has 1 to {} bytes",
            quiver_proto::scram::USER_BYTES_MAX
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a user name has no control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_credential_gives_back_the_credential() {
        let c = Credential::new(Mechanism::Sha512, "pw", &[9u8; 20], 4096).unwrap();
        let s = StoredCredential::from_credential(&c);
        assert_eq!(s.credential(Mechanism::Sha512), Some(c));
        let damaged = StoredCredential {
            salt: "abc".into(),
            ..s
        };
        assert_eq!(damaged.credential(Mechanism::Sha512), None);
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("").is_err());
        assert!(check_user_name("a\nb").is_err());
        assert!(check_user_name(&"x".repeat(256)).is_err());
    }
}
