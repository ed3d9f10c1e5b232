//! What a broker keeps about itself across restarts: the cluster id it belongs to, and the secret
//! its QUIC endpoints derive stateless-reset tokens from.
//!
//! Both are created on first start under `<data_dir>/meta/` and read back afterwards. The reset
//! secret is what lets a broker restarted after kill -9 tell clients at once that their old
//! connections are gone (RFC 9000, section 10.3): the new process derives the same tokens the
//! old one handed out, so its first answer to an old connection's packet is a stateless reset,
//! and the client reconnects instead of waiting for a timeout.

use std::fs;
use std::path::{Path, PathBuf};

pub struct Identity {
    /// `None` only for a cluster's broker that has not joined yet (`load(_, false)`): its id
    /// comes from the controller quorum's log.
    pub cluster_id: Option<String>,
    pub reset_secret: [u8; 64],
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

impl Identity {
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
        Self::load(data_dir, true)
    }

    /// Reads the identity; a missing cluster id is made up when `create_cluster_id` (a broker
    /// running alone), and left `None` otherwise (a cluster's broker learns it from the log).
    pub fn load(data_dir: &Path, create_cluster_id: bool) -> Result<Identity, IdentityError> {
        let dir = data_dir.join("meta");
        fs::create_dir_all(&dir).map_err(|source| IdentityError::Io {
            path: dir.clone(),
            source,
        })?;
        let id_path = dir.join("cluster.id");
        let cluster_id = match fs::read_to_string(&id_path) {
            Ok(s) => {
                let s = s.trim().to_string();
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(IdentityError::Invalid {
                        path: id_path,
                        why: format!("'{s}' is not a cluster id"),
                    });
                }
                Some(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create_cluster_id => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = format!("{:032x}", rand::random::<u128>());
                write_new(&id_path, format!("{id}\n").as_bytes(), 0o600)?;
                Some(id)
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: id_path,
                    source,
                })
            }
        };
        let key_path = dir.join("stateless-reset.key");
        let reset_secret = match fs::read(&key_path) {
            Ok(bytes) => bytes
                .try_into()
                .map_err(|b: Vec<u8>| IdentityError::Invalid {
                    path: key_path.clone(),
                    why: format!("{} bytes, expected 64", b.len()),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 64];
                for chunk in secret.chunks_mut(16) {
                    chunk.copy_from_slice(&rand::random::<u128>().to_le_bytes());
                }
                write_new(&key_path, &secret, 0o600)?;
                secret
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: key_path,
                    source,
                })
            }
        };
        Ok(Identity {
            cluster_id,
            reset_secret,
        })
    }
}

/// Records the cluster id a cluster's broker learned from the controller quorum's log.
/// The name a broker's certificate carries in a cluster, so the other brokers can tell it is
/// broker `id` (a DNS name in its subject alternative names).
pub fn broker_name(id: u32) -> String {
    format!("quiver-broker-{id}")
}

/// Whether a connection's certificate (signed by the cluster's CA, checked in the handshake)
/// names broker `id`: how a broker-to-broker request proves who sends it.
pub fn names_broker(identity: Option<&quiver_net::PeerIdentity>, id: u32) -> bool {
    let name = broker_name(id);
    identity.is_some_and(|i| i.dns_names.contains(&name))
}

/// `streamd --issue-client-cert NAME`: a client certificate for `name` from the development
/// CA (`dev_ca_dir`, which must exist, else `<data_dir>/tls`, made if missing), written to `NAME.pem` and
/// `NAME.key` (0600) in the current directory. Returns the two paths.
pub fn issue_client_cert(
    config: &crate::config::Config,
    name: &str,
) -> Result<(PathBuf, PathBuf), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "'{name}' is not a certificate name streamd issues (letters, digits, '-', '_', '.')"
        ));
    }
    let certs = if config.dev_ca_dir.as_os_str().is_empty() {
        quiver_net::tls::ensure_dev_certs(&config.data_dir)
            .map_err(|e| format!("the development CA: {e}"))?
    } else {
        // A shared CA is made for the names of the cluster's brokers (`--make-dev-ca`), not
        // here: one made for a client certificate would permit no broker.
        let dir = &config.dev_ca_dir;
        let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !ca_cert.exists() || !ca_key.exists() {
            return Err(format!(
                "no development CA in {}: make one for the cluster's names first, e.g. \
                 `streamd --make-dev-ca quiver-broker-1,quiver-broker-2,quiver-broker-3 --dev-ca-dir {}`",
                dir.display(),
                dir.display()
            ));
        }
        quiver_net::tls::DevCerts {
            ca_cert,
            ca_key,
            server_cert: PathBuf::new(),
            server_key: PathBuf::new(),
        }
    };
    let (cert, key) = quiver_net::tls::issue_dev_client_cert(&certs, name)
        .map_err(|e| format!("issuing a certificate for {name}: {e}"))?;
    let cert_path = PathBuf::from(format!("{name}.pem"));
    let key_path = PathBuf::from(format!("{name}.key"));
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&cert_path, &cert, 0o644)?;
    write(&key_path, &key, 0o600)?;
    Ok((cert_path, key_path))
}

/// `streamd --make-dev-ca NAMES`: makes the development CA (`dev_ca_dir`, else
/// `<data_dir>/tls`) permitting `names` and the default names, or widens the one there to
/// permit them; what it did, as a line to print.
pub fn make_dev_ca(config: &crate::config::Config, names: &[String]) -> Result<String, String> {
    let dir = if config.dev_ca_dir.as_os_str().is_empty() {
        config.data_dir.join("tls")
    } else {
        config.dev_ca_dir.clone()
    };
    let ca = dir.join("ca.pem");
    match quiver_net::tls::make_dev_ca(&dir, names).map_err(|e| e.to_string())? {
        quiver_net::tls::MadeDevCa::Created(permits) => Ok(format!(
            "created the development CA {} (key {}); it may sign for: {}",
            ca.display(),
            dir.join("ca.key").display(),
            permits.join(", ")
        )),
        quiver_net::tls::MadeDevCa::Widened(added) => Ok(format!(
            "rewrote {} (same key) to also permit: {}; brokers and clients holding the old file must take the new one (restart the brokers)",
            ca.display(),
            added.join(", ")
        )),
        quiver_net::tls::MadeDevCa::Unchanged => Ok(format!(
            "{} already permits every name given; nothing changed",
            ca.display()
        )),
    }
}

/// The broker a certificate names (a `quiver-broker-<id>` DNS name), if any.
pub fn broker_named(identity: &quiver_net::PeerIdentity) -> Option<u32> {
    let prefix = broker_name(0);
    let prefix = &prefix[..prefix.len() - 1];
    identity.dns_names.iter().find_map(|n| {
        let id = n.strip_prefix(prefix)?;
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            .then(|| id.parse().ok())
            .flatten()
    })
}

/// Makes the broker's private files readable by its user alone (0600), whatever made them
/// wider (a copy, a restore, an older version): everything under `<data_dir>/meta` (metadata,
/// the quorum's log and snapshots, the cluster id, the stateless-reset key) and the keys under
/// `<data_dir>/tls`. Runs at every start; returns the files it narrowed (each is logged).
pub fn enforce_private_files(data_dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut narrowed = Vec::new();
    let mut visit = |path: &Path| {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode();
        if meta.is_file() && mode & 0o077 != 0 {
            match fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), was = format!("{:o}", mode & 0o777), "a private file was readable by others; narrowed to 0600");
                    narrowed.push(path.to_path_buf());
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "a private file is readable by others and cannot be narrowed")
                }
            }
        }
    };
    let mut dirs = vec![data_dir.join("meta")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else {
                visit(&path);
            }
        }
    }
    for entry in fs::read_dir(data_dir.join("tls"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "key") {
            visit(&path);
        }
    }
    narrowed
}

pub fn write_cluster_id(data_dir: &Path, id: &str) -> Result<(), IdentityError> {
    write_new(
        &data_dir.join("meta").join("cluster.id"),
        format!("{id}\n").as_bytes(),
        0o600,
    )
}

/// Writes a file that must not exist yet, durably (file and directory synced).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    crate::cluster::meta::write_durably(path, &path.with_extension("tmp"), bytes, mode).map_err(
        |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.reset_secret, b.reset_secret);
        assert_eq!(a.cluster_id.as_deref().map(str::len), Some(32));
        let mode = fs::metadata(dir.path().join("meta/stateless-reset.key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        fs::write(dir.path().join("meta/stateless-reset.key"), b"short").unwrap();
        assert!(Identity::load_or_create(dir.path()).is_err());
    }

    /// Files of `meta/` and keys of `tls/` that others could read are narrowed to 0600 at
    /// start; certificates (public) are left as they are.
    #[test]
    fn private_files_are_narrowed_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["meta/quorum", "tls"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let files = [
            ("meta/metadata.json", 0o644, 0o600),
            ("meta/quorum/log", 0o664, 0o600),
            ("meta/cluster.id", 0o600, 0o600),
            ("tls/server.key", 0o640, 0o600),
            ("tls/server.pem", 0o644, 0o644),
        ];
        for (f, mode, _) in files {
            fs::write(d.join(f), b"x").unwrap();
            fs::set_permissions(d.join(f), fs::Permissions::from_mode(mode)).unwrap();
        }
        let narrowed = enforce_private_files(d);
        assert_eq!(narrowed.len(), 3, "{narrowed:?}");
        for (f, _, want) in files {
            let mode = fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "{f}");
        }
        assert!(
            enforce_private_files(d).is_empty(),
            "nothing left to narrow"
        );
    }
}
