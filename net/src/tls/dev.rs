//! The development CA and the certificates it issues: what makes the out-of-the-box setup work
//! with verification on, and a local cluster's brokers prove who they are to each other.
//!
//! ```text
//! <data_dir>/tls/ca.pem       development CA certificate (give this to clients)
//! <data_dir>/tls/ca.key       its private key (0600)
//! <data_dir>/tls/server.pem   server certificate signed by the CA; SANs: localhost, 127.0.0.1,
//!                             ::1, this machine's hostname, and the broker's listen address and
//!                             advertised host (reissued by the same CA when those change)
//! <data_dir>/tls/server.key   its private key (0600)
//! ```
//!
//! **Name constraints.** A development CA may sign only for the names it was made for: its
//! certificate carries an X.509 name-constraints extension whose permitted subtrees are exactly
//! those DNS names and addresses. Whoever trusts `ca.pem` (a client, or a person who put it in a
//! trust store) therefore trusts it for those names alone, even if `ca.key` leaks: a certificate
//! it signs for any other DNS name or address fails verification. Client certificates carry no
//! subject alternative names (the principal is their common name), so the constraints, which
//! rustls applies to names of the forms they list, do not touch them.
//!
//! - A broker's own CA (`<data_dir>/tls`) is made for the names of its first server
//!   certificate. A later start that must name more (another `--listen` or `--advertised-host`)
//!   widens it: `ca.pem` is rewritten with the same key, subject and validity and the larger set
//!   of names, and the start logs that clients holding a copy of the old file must take the new
//!   one. A CA made before constraints existed is narrowed to the names it issued.
//! - A shared CA (`dev_ca_dir`, one per local cluster) is made by the first broker that starts,
//!   for its names and every voter's (`quiver-broker-<id>` and the voter's host), or ahead of time
//!   with [`make_dev_ca`] (`streamd --make-dev-ca NAMES`). It is never widened by a start (the
//!   brokers already running would stop trusting the newcomer): a broker whose names it does not
//!   permit refuses to start and says how to make one that does. The default names (localhost,
//!   loopback, the host name) it does not permit are left out of that broker's certificate.

use std::{
    fs,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};

use super::{io_err, load_certs, server_config, ClientTlsFiles, ServerTlsFiles, TlsError};

/// The development certificate files under `<data_dir>/tls`.
#[derive(Clone, Debug)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevCerts {
    fn at(dir: &Path) -> Self {
        DevCerts {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    /// The server files, without mutual TLS.
    pub fn server_files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert_chain: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: None,
            peer_ca: None,
        }
    }

    /// Client files that trust the development CA.
    pub fn client_files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca_files: vec![self.ca_cert.clone()],
            identity: None,
        }
    }
}

const DEV_CA_COMMON_NAME: &str = "Quiver development CA";

/// How long a development CA is valid: years, not the centuries rcgen gives by default (a key
/// that leaks should not be trusted for ever). Its certificates are valid
/// [`DEV_CERT_VALIDITY_DAYS`] and reissued at a start past [`DEV_CERT_REISSUE_DAYS`].
pub const DEV_CA_VALIDITY_DAYS: i64 = 10 * 365;
/// How long a development server certificate is valid.
pub const DEV_CERT_VALIDITY_DAYS: i64 = 365;
/// A development server certificate older than this is reissued at start.
pub const DEV_CERT_REISSUE_DAYS: u64 = 300;

/// Creates the development CA and a server certificate signed by it under `<data_dir>/tls` on
/// first start, and reuses them on later starts. Call it once per process before the shards bind
/// (it is not safe against two processes creating the same directory at the same instant).
/// Same as [`ensure_dev_certs_for`] with no names beyond the defaults.
///
/// Rationale for a CA rather than one self-signed server certificate: clients keep trusting the
/// same `ca.pem` when the server certificate is reissued, and the same CA can sign client
/// certificates for mutual TLS in development.
pub fn ensure_dev_certs(data_dir: &Path) -> Result<DevCerts, TlsError> {
    ensure_dev_certs_for(data_dir, &[])
}

/// [`ensure_dev_certs`], with a server certificate that also names `names` (the addresses and
/// host names clients will dial: the broker's listen address and advertised host). The default
/// names are `localhost`, `127.0.0.1`, `::1` and this machine's host name.
///
/// When the certificate on disk does not name one of them (the broker was started with another
/// `--listen` or `--advertised-host`), or does not match its key, a new server certificate is
/// issued by the same development CA, naming the old DNS names, the defaults and `names`; the CA
/// keeps its key, so it is widened to permit the new names rather than replaced (module docs).
pub fn ensure_dev_certs_for(data_dir: &Path, names: &[String]) -> Result<DevCerts, TlsError> {
    let dir = data_dir.join("tls");
    let files = DevCerts::at(&dir);
    let ca_present = [files.ca_cert.exists(), files.ca_key.exists()];
    let server_present = [files.server_cert.exists(), files.server_key.exists()];
    if ca_present == [true, true] {
        let mut ca = DevCa::load(&files.ca_cert, &files.ca_key)?;
        let mut wanted = dev_server_names(names);
        // The names its certificate already carries stay (a client may dial any of them).
        if let Some(old) = load_certs(&files.server_cert)
            .ok()
            .and_then(|c| c.first().and_then(super::PeerIdentity::from_cert))
        {
            for n in old.dns_names {
                if !wanted.contains(&n) {
                    wanted.push(n);
                }
            }
        }
        let rewritten = ca.permit_all(&wanted);
        if !rewritten.is_empty() {
            write_atomic(&files.ca_cert, ca.cert.pem().as_bytes(), 0o644)?;
            tracing::warn!(
                ca = %files.ca_cert.display(),
                permits = %rewritten.join(", "),
                "rewrote the development CA certificate (same key) to permit these names; clients holding a copy of the old ca.pem must take the new one"
            );
        }
        let missing = names_missing_from(&files, names);
        if server_present == [true, true]
            && missing.is_empty()
            && server_config(&files.server_files()).is_ok()
            && !due_for_reissue(&files.server_cert)
        {
            return Ok(files);
        }
        write_server_cert(&files, &ca, wanted)?;
        if server_present == [true, true] {
            tracing::info!(
                dir = %dir.display(),
                added = %missing.join(", "),
                "reissued the development server certificate from the same CA to name the addresses clients dial"
            );
        }
        return Ok(files);
    }
    if ca_present.contains(&true) || server_present.contains(&true) {
        let missing = if !ca_present[0] { "ca.pem" } else { "ca.key" };
        return Err(TlsError::IncompleteDevDir { dir, missing });
    }
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let wanted = dev_server_names(names);
    let ca = DevCa::new(&wanted)?;
    // Keys first and the CA certificate last: a crash in between leaves an incomplete directory,
    // which the next start reports instead of silently trusting half a setup.
    write_atomic(&files.ca_key, ca.key.serialize_pem().as_bytes(), 0o600)?;
    write_server_cert(&files, &ca, wanted)?;
    write_atomic(&files.ca_cert, ca.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(dir = %dir.display(), "created development CA and server certificate");
    Ok(files)
}

/// [`ensure_dev_certs_for`] with the development CA in `ca_dir`, shared by the brokers of one
/// cluster on one machine (a local cluster), and this broker's server certificate in
/// `<data_dir>/tls`. The CA is created in `ca_dir` if it is not there (under a lock, so brokers
/// starting at once make one CA), permitting this broker's names and `also_permit` (the other
/// brokers' names); the server certificate is issued afresh from it on every start, so it is
/// always the shared CA's and names `names`, which the CA must permit (it is never widened
/// here: [`make_dev_ca`] does that, and the brokers running then must restart to trust it).
pub fn ensure_dev_certs_shared(
    data_dir: &Path,
    ca_dir: &Path,
    names: &[String],
    also_permit: &[String],
) -> Result<DevCerts, TlsError> {
    let ca_files = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    // A CA that is all there may sit in a read-only directory (a mounted secret): no lock is
    // needed to read it. Otherwise brokers starting at once take a lock so one of them makes it.
    let lock = if ca_files.0.exists() && ca_files.1.exists() {
        None
    } else {
        Some(lock_dir(ca_dir)?)
    };
    let server_dir = data_dir.join("tls");
    fs::create_dir_all(&server_dir).map_err(io_err(&server_dir))?;
    let files = DevCerts {
        ca_cert: ca_files.0,
        ca_key: ca_files.1,
        server_cert: server_dir.join("server.pem"),
        server_key: server_dir.join("server.key"),
    };
    let ca = match (files.ca_cert.exists(), files.ca_key.exists()) {
        (true, true) => DevCa::load(&files.ca_cert, &files.ca_key)?,
        (false, false) => {
            let mut permit = dev_server_names(names);
            push_new(&mut permit, also_permit);
            let ca = DevCa::new(&permit)?;
            write_atomic(&files.ca_key, ca.key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&files.ca_cert, ca.cert.pem().as_bytes(), 0o644)?;
            tracing::info!(dir = %ca_dir.display(), permits = %permit.join(", "), "created the shared development CA");
            ca
        }
        (cert, _) => {
            return Err(TlsError::IncompleteDevDir {
                dir: ca_dir.to_path_buf(),
                missing: if cert { "ca.key" } else { "ca.pem" },
            })
        }
    };
    let wanted = dev_server_names(names);
    let required = wanted[dev_server_names(&[]).len()..].to_vec();
    let refused: Vec<String> = required
        .iter()
        .filter(|n| !ca.permits(n))
        .cloned()
        .collect();
    if !refused.is_empty() {
        return Err(TlsError::DevCaDoesNotPermit {
            dir: ca_dir.to_path_buf(),
            names: refused.join(","),
        });
    }
    if ca.constraints().is_none() {
        tracing::warn!(dir = %ca_dir.display(), "the shared development CA has no name constraints (an older streamd made it): it can sign for any name; make a constrained one with `streamd --make-dev-ca`");
    }
    let (kept, left_out): (Vec<String>, Vec<String>) =
        wanted.into_iter().partition(|n| ca.permits(n));
    if !left_out.is_empty() {
        tracing::info!(dir = %ca_dir.display(), left_out = %left_out.join(", "), "the shared development CA does not permit these default names; the server certificate leaves them out");
    }
    write_server_cert(&files, &ca, kept)?;
    drop(lock);
    Ok(files)
}

/// What [`make_dev_ca`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum MadeDevCa {
    /// A new CA permitting these names.
    Created(Vec<String>),
    /// The CA there (same key) now also permits these names; `ca.pem` was rewritten, and what
    /// trusts the old file must take the new one.
    Widened(Vec<String>),
    /// The CA there already permitted every name.
    Unchanged,
}

/// `streamd --make-dev-ca NAMES`: makes a development CA in `dir` (`ca.pem`, `ca.key`) that may
/// sign for `names` and the default names (localhost, loopback, this machine's host name), or
/// widens the one there (same key, subject and validity) to permit them too. The way to give a
/// cluster's brokers one CA with all their names before they start (the names brokers prove who
/// they are with, `quiver-broker-<id>`, and the host names clients dial). A DNS name permits
/// its subdomains too (RFC 5280: `quiver` permits `quiver-0.quiver`).
pub fn make_dev_ca(dir: &Path, names: &[String]) -> Result<MadeDevCa, TlsError> {
    for n in names {
        if subtree(n).is_none() {
            return Err(TlsError::NotAName(n.clone()));
        }
    }
    let _lock = lock_dir(dir)?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut permit = dev_server_names(&[]);
    push_new(&mut permit, names);
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => {
            let ca = DevCa::new(&permit)?;
            write_atomic(&key_path, ca.key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&cert_path, ca.cert.pem().as_bytes(), 0o644)?;
            Ok(MadeDevCa::Created(ca.permitted()))
        }
        (true, true) => {
            let mut ca = DevCa::load(&cert_path, &key_path)?;
            let added = if ca.constraints().is_none() {
                // Made before constraints existed: constrain it to the names asked for.
                ca.set_permitted(&permit)?;
                ca.permitted()
            } else {
                ca.permit_all(&permit)
            };
            if added.is_empty() {
                return Ok(MadeDevCa::Unchanged);
            }
            write_atomic(&cert_path, ca.cert.pem().as_bytes(), 0o644)?;
            Ok(MadeDevCa::Widened(added))
        }
        (cert, _) => Err(TlsError::IncompleteDevDir {
            dir: dir.to_path_buf(),
            missing: if cert { "ca.key" } else { "ca.pem" },
        }),
    }
}

/// A lock on `<dir>/.lock` (the directory made if missing), so that brokers and commands
/// writing one CA at once make one CA.
fn lock_dir(dir: &Path) -> Result<fs::File, TlsError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(".lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    Ok(lock)
}

/// A development CA in memory: its parameters (read back from `ca.pem`, so a certificate it
/// signs names the same issuer and key identifier), its key, and its certificate.
struct DevCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl DevCa {
    /// A new CA (a new key) that permits `names`.
    fn new(names: &[String]) -> Result<DevCa, TlsError> {
        let mut params = rcgen::CertificateParams::default();
        (params.not_before, params.not_after) = validity(DEV_CA_VALIDITY_DAYS);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, DEV_CA_COMMON_NAME);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: subtrees(names),
            excluded_subtrees: Vec::new(),
        });
        let key = rcgen::KeyPair::generate()?;
        let cert = params.clone().self_signed(&key)?;
        Ok(DevCa { params, key, cert })
    }

    /// The CA in `ca.pem` with its key from `ca.key`; refused if the key is not the
    /// certificate's (everything it signed would fail verification).
    fn load(cert_path: &Path, key_path: &Path) -> Result<DevCa, TlsError> {
        let pem = fs::read_to_string(cert_path).map_err(io_err(cert_path))?;
        let key_pem = fs::read_to_string(key_path).map_err(io_err(key_path))?;
        let key = rcgen::KeyPair::from_pem(&key_pem)?;
        let der = load_certs(cert_path)?.remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| TlsError::Generate(rcgen::Error::CouldNotParseCertificate))?;
        if parsed.public_key().raw != key.public_key_der().as_slice() {
            return Err(TlsError::DevCaKeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        let params = rcgen::CertificateParams::from_ca_cert_pem(&pem)?;
        let cert = params.clone().self_signed(&key)?;
        Ok(DevCa { params, key, cert })
    }

    fn constraints(&self) -> Option<&NameConstraints> {
        self.params.name_constraints.as_ref()
    }

    /// Whether a certificate this CA signs may carry `name` (RFC 5280 subtrees: a DNS name
    /// permits itself and its subdomains, an address range its addresses). A CA without
    /// constraints permits every name.
    fn permits(&self, name: &str) -> bool {
        let Some(c) = self.constraints() else {
            return true;
        };
        let excluded = c.excluded_subtrees.iter().any(|s| covers(s, name));
        !excluded && c.permitted_subtrees.iter().any(|s| covers(s, name))
    }

    /// The permitted names, as written to it.
    fn permitted(&self) -> Vec<String> {
        self.constraints()
            .map(|c| c.permitted_subtrees.iter().filter_map(show).collect())
            .unwrap_or_default()
    }

    /// Widens the CA to permit every name in `names` it does not yet permit (the certificate
    /// is rebuilt: same key, subject, serial and validity); the names added. A CA without
    /// constraints is constrained to `names`.
    fn permit_all(&mut self, names: &[String]) -> Vec<String> {
        if self.constraints().is_none() {
            return match self.set_permitted(names) {
                Ok(()) => self.permitted(),
                Err(_) => Vec::new(),
            };
        }
        let added: Vec<String> = names
            .iter()
            .filter(|n| !self.permits(n) && subtree(n).is_some())
            .cloned()
            .collect();
        if added.is_empty() {
            return added;
        }
        let mut params = self.params.clone();
        if let Some(c) = params.name_constraints.as_mut() {
            c.permitted_subtrees.extend(subtrees(&added));
        }
        match params.clone().self_signed(&self.key) {
            Ok(cert) => {
                self.params = params;
                self.cert = cert;
                added
            }
            Err(_) => Vec::new(),
        }
    }

    /// Constrains the CA to exactly `names` (rebuilding its certificate).
    fn set_permitted(&mut self, names: &[String]) -> Result<(), TlsError> {
        let mut params = self.params.clone();
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: subtrees(names),
            excluded_subtrees: Vec::new(),
        });
        self.cert = params.clone().self_signed(&self.key)?;
        self.params = params;
        Ok(())
    }
}

/// The subtree that permits exactly `name` (and, for a DNS name, its subdomains): an address
/// is a range of one, anything else a DNS name; `None` for what neither can be.
fn subtree(name: &str) -> Option<GeneralSubtree> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        return Some(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            ip, bits,
        )));
    }
    let dns = rustls::pki_types::DnsName::try_from(name).ok()?;
    Some(GeneralSubtree::DnsName(dns.as_ref().to_ascii_lowercase()))
}

fn subtrees(names: &[String]) -> Vec<GeneralSubtree> {
    let mut out: Vec<GeneralSubtree> = Vec::new();
    for s in names.iter().filter_map(|n| subtree(n)) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Whether subtree `s` covers `name` (module docs of [`DevCa::permits`]).
fn covers(s: &GeneralSubtree, name: &str) -> bool {
    match (s, name.parse::<IpAddr>()) {
        (GeneralSubtree::IpAddress(net), Ok(ip)) => {
            let (base, mask, addr): (&[u8], &[u8], Vec<u8>) = match (net, ip) {
                (CidrSubnet::V4(b, m), IpAddr::V4(a)) => (b, m, a.octets().to_vec()),
                (CidrSubnet::V6(b, m), IpAddr::V6(a)) => (b, m, a.octets().to_vec()),
                _ => return false,
            };
            base.iter()
                .zip(mask)
                .zip(&addr)
                .all(|((b, m), a)| a & m == b & m)
        }
        (GeneralSubtree::DnsName(base), Err(_)) => {
            let (name, base) = (name.to_ascii_lowercase(), base.to_ascii_lowercase());
            name == base || name.ends_with(&format!(".{base}"))
        }
        _ => false,
    }
}

/// A subtree written as a name (an address range of one as its address; a wider range as
/// `address/mask`).
fn show(s: &GeneralSubtree) -> Option<String> {
    match s {
        GeneralSubtree::DnsName(n) => Some(n.clone()),
        GeneralSubtree::IpAddress(CidrSubnet::V4(a, m)) => Some(if m == &[255; 4] {
            IpAddr::from(*a).to_string()
        } else {
            format!("{}/{}", IpAddr::from(*a), IpAddr::from(*m))
        }),
        GeneralSubtree::IpAddress(CidrSubnet::V6(a, m)) => Some(if m == &[255; 16] {
            IpAddr::from(*a).to_string()
        } else {
            format!("{}/{}", IpAddr::from(*a), IpAddr::from(*m))
        }),
        _ => None,
    }
}

fn push_new(into: &mut Vec<String>, names: &[String]) {
    for n in names {
        if !n.is_empty() && !into.contains(n) {
            into.push(n.clone());
        }
    }
}

/// The default names of a development server certificate, then `extra` (each once; empty and
/// unspecified addresses such as `0.0.0.0` left out).
fn dev_server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = hostname();
    for n in host.iter().chain(extra) {
        let unspecified = n
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        // What is neither an address nor a DNS name (a host name with a space) no client can
        // dial, and no name constraint can permit.
        if !n.is_empty() && !unspecified && !names.contains(n) && subtree(n).is_some() {
            names.push(n.clone());
        }
    }
    names
}

/// Which of `names` the server certificate in `files` is not valid for (all of them when it
/// cannot be read).
fn names_missing_from(files: &DevCerts, names: &[String]) -> Vec<String> {
    let certs = load_certs(&files.server_cert).unwrap_or_default();
    let ee = certs
        .first()
        .and_then(|c| webpki::EndEntityCert::try_from(c).ok());
    dev_server_names(names)
        .into_iter()
        .filter(|n| {
            let Some(ee) = &ee else { return true };
            let Ok(name) = rustls::pki_types::ServerName::try_from(n.as_str()) else {
                return false; // not a name a client could dial; nothing to add
            };
            ee.verify_is_valid_for_subject_name(&name).is_err()
        })
        .collect()
}

/// Issues a server certificate for `names` signed by the development CA and writes it with its
/// new key (key first: a crash between the two leaves a pair that does not match, which the next
/// start detects and reissues).
fn write_server_cert(files: &DevCerts, ca: &DevCa, names: Vec<String>) -> Result<(), TlsError> {
    let mut params = rcgen::CertificateParams::new(names)?;
    (params.not_before, params.not_after) = validity(DEV_CERT_VALIDITY_DAYS);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quiver dev server");
    // Client authentication too: a broker of a cluster presents the same certificate to the
    // other brokers to prove who it is.
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let server_key = rcgen::KeyPair::generate()?;
    let server = params.signed_by(&server_key, &ca.cert, &ca.key)?;
    write_atomic(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&files.server_cert, server.pem().as_bytes(), 0o644)
}

/// `(not_before, not_after)` for a certificate valid `days` from a day ago (clocks differ).
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(days),
    )
}

/// Whether the certificate file is older than `DEV_CERT_REISSUE_DAYS` (by its modification
/// time: it is written only when issued), or cannot be read.
fn due_for_reissue(path: &Path) -> bool {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    age.is_none_or(|a| a.as_secs() > DEV_CERT_REISSUE_DAYS * 86_400)
}

/// Issues a client certificate (for mutual TLS in development and tests) signed by the
/// development CA in `certs`. Returns `(certificate PEM, private key PEM)`. It carries no
/// subject alternative names: the principal is its common name, which the CA's name
/// constraints (on DNS names and addresses) do not restrict.
pub fn issue_dev_client_cert(
    certs: &DevCerts,
    common_name: &str,
) -> Result<(String, String), TlsError> {
    let ca = DevCa::load(&certs.ca_cert, &certs.ca_key)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    (params.not_before, params.not_after) = validity(DEV_CERT_VALIDITY_DAYS);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success when the
    // name fits, and we stop at the first NUL or the end of the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::{client_config, load_roots, provider};
    use super::*;
    use std::sync::Arc;

    /// Verifies the server certificate at `cert` for `name` against the CA file `ca`, as a
    /// client does.
    fn verify(ca: &Path, cert: &Path, name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let roots = load_roots(&[ca.to_path_buf()]).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let chain = load_certs(cert).unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// Signs a server certificate for `names` with the CA in `dir` (as a thief of `ca.key`
    /// could) and writes it to `dir/forged.pem`.
    fn forge(files: &DevCerts, names: &[&str]) -> PathBuf {
        let ca = DevCa::load(&files.ca_cert, &files.ca_key).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        let path = files.ca_cert.with_file_name("forged.pem");
        fs::write(&path, cert.pem()).unwrap();
        path
    }

    fn is_name_constraint_violation(r: Result<(), rustls::Error>) -> bool {
        matches!(
            r,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(_)
            )) | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
            )) | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ) && format!("{r:?}").contains("NameConstraintViolation")
    }

    #[test]
    fn the_dev_ca_signs_only_for_the_names_it_issued() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs_for(dir.path(), &["broker.example".to_owned()]).unwrap();
        // Its own certificate verifies for each of its names.
        for name in ["localhost", "127.0.0.1", "::1", "broker.example"] {
            verify(&files.ca_cert, &files.server_cert, name).unwrap();
        }
        // With its key, a certificate for another name or address does not.
        for name in ["bank.example", "10.0.0.1", "example"] {
            let forged = forge(&files, &[name]);
            let r = verify(&files.ca_cert, &forged, name);
            assert!(is_name_constraint_violation(r.clone()), "{name}: {r:?}");
        }
        // Nor does one that adds a foreign name to permitted ones.
        let forged = forge(&files, &["localhost", "bank.example"]);
        let r = verify(&files.ca_cert, &forged, "localhost");
        assert!(is_name_constraint_violation(r.clone()), "{r:?}");
        // A subdomain of a permitted name is inside its subtree (RFC 5280).
        let forged = forge(&files, &["b1.broker.example"]);
        verify(&files.ca_cert, &forged, "b1.broker.example").unwrap();
    }

    #[test]
    fn client_certificates_from_a_constrained_ca_are_accepted() {
        use rustls::pki_types::UnixTime;
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let (cert_pem, _key) = issue_dev_client_cert(&files, "alice").unwrap();
        let cert = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let roots = load_roots(std::slice::from_ref(&files.ca_cert)).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .unwrap();
    }

    #[test]
    fn a_new_name_widens_the_brokers_own_ca_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        let old_ca = dir.path().join("old-ca.pem");
        fs::copy(&first.ca_cert, &old_ca).unwrap();
        let key = fs::read(&first.ca_key).unwrap();

        let files = ensure_dev_certs_for(dir.path(), &["10.9.8.7".to_owned()]).unwrap();
        assert_eq!(fs::read(&files.ca_key).unwrap(), key, "the key is kept");
        assert_ne!(
            fs::read(&files.ca_cert).unwrap(),
            fs::read(&old_ca).unwrap()
        );
        verify(&files.ca_cert, &files.server_cert, "10.9.8.7").unwrap();
        verify(&files.ca_cert, &files.server_cert, "localhost").unwrap();
        // A copy of the old ca.pem does not trust the certificate naming the new address.
        assert!(is_name_constraint_violation(verify(
            &old_ca,
            &files.server_cert,
            "localhost"
        )));
        // Still constrained: the widened CA permits the new address and not others.
        let forged = forge(&files, &["10.9.8.6"]);
        assert!(is_name_constraint_violation(verify(
            &files.ca_cert,
            &forged,
            "10.9.8.6"
        )));
        // Nothing new asked: ca.pem is not rewritten.
        let now = fs::read(&files.ca_cert).unwrap();
        ensure_dev_certs_for(dir.path(), &["10.9.8.7".to_owned()]).unwrap();
        assert_eq!(fs::read(&files.ca_cert).unwrap(), now);
    }

    #[test]
    fn a_ca_made_before_constraints_is_narrowed_to_the_names_it_issued() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs_for(dir.path(), &["old.example".to_owned()]).unwrap();
        // Rewrite ca.pem as an older streamd made it: the same key, no constraints.
        let mut ca = DevCa::load(&files.ca_cert, &files.ca_key).unwrap();
        ca.params.name_constraints = None;
        let unconstrained = ca.params.clone().self_signed(&ca.key).unwrap();
        fs::write(&files.ca_cert, unconstrained.pem()).unwrap();
        let forged = forge(&files, &["bank.example"]);
        verify(&files.ca_cert, &forged, "bank.example").unwrap();

        ensure_dev_certs(dir.path()).unwrap();
        assert!(is_name_constraint_violation(verify(
            &files.ca_cert,
            &forged,
            "bank.example"
        )));
        verify(&files.ca_cert, &files.server_cert, "old.example").unwrap();
    }

    #[test]
    fn a_shared_ca_permits_the_cluster_names_and_refuses_others_until_widened() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let (b1, b2, b3) = (
            dir.path().join("b1"),
            dir.path().join("b2"),
            dir.path().join("b3"),
        );
        let all = ["quiver-broker-1".to_owned(), "quiver-broker-2".to_owned()];
        // Broker 1 makes it for every voter; broker 2 starts from it.
        let f1 = ensure_dev_certs_shared(&b1, &ca_dir, &all[..1], &all).unwrap();
        let f2 = ensure_dev_certs_shared(&b2, &ca_dir, &all[1..], &all).unwrap();
        assert_eq!(f1.ca_cert, f2.ca_cert);
        verify(&f2.ca_cert, &f2.server_cert, "quiver-broker-2").unwrap();
        // A third broker's name is not permitted: it refuses to start, naming the fix.
        let three = ["quiver-broker-3".to_owned()];
        let err = ensure_dev_certs_shared(&b3, &ca_dir, &three, &three).unwrap_err();
        assert!(
            matches!(&err, TlsError::DevCaDoesNotPermit { names, .. } if names == "quiver-broker-3"),
            "{err}"
        );
        assert!(
            err.to_string().contains("--make-dev-ca quiver-broker-3"),
            "{err}"
        );
        // Widened ahead of its start (same key), it starts.
        let key = fs::read(ca_dir.join("ca.key")).unwrap();
        assert_eq!(
            make_dev_ca(&ca_dir, &three).unwrap(),
            MadeDevCa::Widened(three.to_vec())
        );
        assert_eq!(make_dev_ca(&ca_dir, &three).unwrap(), MadeDevCa::Unchanged);
        assert_eq!(fs::read(ca_dir.join("ca.key")).unwrap(), key);
        let f3 = ensure_dev_certs_shared(&b3, &ca_dir, &three, &three).unwrap();
        verify(&f3.ca_cert, &f3.server_cert, "quiver-broker-3").unwrap();
        verify(&f3.ca_cert, &f1.server_cert, "quiver-broker-1").unwrap();
    }

    #[test]
    fn a_ca_made_ahead_of_time_serves_brokers_and_leaves_out_defaults_it_does_not_permit() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let names = ["quiver-0.quiver".to_owned(), "quiver-broker-1".to_owned()];
        let MadeDevCa::Created(permitted) = make_dev_ca(&ca_dir, &names).unwrap() else {
            panic!("a new CA")
        };
        for n in [
            "localhost",
            "127.0.0.1",
            "::1",
            "quiver-0.quiver",
            "quiver-broker-1",
        ] {
            assert!(permitted.iter().any(|p| p == n), "{n} in {permitted:?}");
        }
        // Rewrite it as if made elsewhere for the two names alone (another machine's host
        // name is not this one's).
        let mut ca = DevCa::load(&ca_dir.join("ca.pem"), &ca_dir.join("ca.key")).unwrap();
        ca.set_permitted(&names).unwrap();
        fs::write(ca_dir.join("ca.pem"), ca.cert.pem()).unwrap();
        let files = ensure_dev_certs_shared(dir.path(), &ca_dir, &names, &[]).unwrap();
        verify(&files.ca_cert, &files.server_cert, "quiver-0.quiver").unwrap();
        let id = load_certs(&files.server_cert)
            .ok()
            .and_then(|c| c.first().and_then(super::super::PeerIdentity::from_cert))
            .unwrap();
        assert!(!id.dns_names.iter().any(|n| n == "localhost"), "{id:?}");
        // A name that is neither a DNS name nor an address is refused by name.
        let err = make_dev_ca(&ca_dir, &["not a name".to_owned()]).unwrap_err();
        assert!(
            matches!(err, TlsError::NotAName(ref n) if n == "not a name"),
            "{err}"
        );
    }

    #[test]
    fn subtrees_cover_names_as_rfc_5280_says() {
        let table: &[(&str, &str, bool)] = &[
            ("localhost", "localhost", true),
            ("localhost", "LOCALHOST", true),
            ("quiver", "quiver-0.quiver", true),
            ("quiver", "xquiver", false),
            ("quiver", "quiver.example", false),
            ("broker.example", "a.b.broker.example", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.1", "::1", false),
            ("::1", "::1", true),
            ("127.0.0.1", "localhost", false),
            ("localhost", "127.0.0.1", false),
        ];
        for (base, name, want) in table {
            let s = subtree(base).unwrap();
            assert_eq!(covers(&s, name), *want, "{base} covers {name}");
        }
        let wide =
            GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix("10.0.0.0".parse().unwrap(), 8));
        assert!(covers(&wide, "10.200.1.1") && !covers(&wide, "11.0.0.1"));
        assert_eq!(show(&wide).as_deref(), Some("10.0.0.0/255.0.0.0"));
        assert!(subtree("not a name").is_none());
    }

    /// A development server certificate is valid now and not in 400 days (its CA is good for
    /// ten years: it is reissued from the same CA before it lapses).
    #[test]
    fn dev_certificates_expire_in_a_year_not_in_centuries() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let roots = load_roots(std::slice::from_ref(&files.ca_cert)).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let chain = load_certs(&files.server_cert).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let at = |t| {
            verifier.verify_server_cert(&chain[0], &[], &name, &[], UnixTime::since_unix_epoch(t))
        };
        assert!(at(now).is_ok());
        let later = now + std::time::Duration::from_secs(400 * 86_400);
        assert!(at(later).is_err(), "still valid in 400 days");
        assert!(!due_for_reissue(&files.server_cert));
    }

    #[test]
    fn dev_certs_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        let ca_before = fs::read(&first.ca_cert).unwrap();
        let second = ensure_dev_certs(dir.path()).unwrap();
        assert_eq!(fs::read(&second.ca_cert).unwrap(), ca_before);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&first.ca_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The files form working rustls configurations.
        server_config(&first.server_files()).unwrap();
        client_config(&first.client_files()).unwrap();
    }

    #[test]
    fn the_dev_server_certificate_is_reissued_to_name_new_addresses_by_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        let ca_key = fs::read(&first.ca_key).unwrap();
        let server = fs::read(&first.server_cert).unwrap();
        let names = ["127.0.0.2".to_owned(), "broker-1.example".to_owned()];
        assert_eq!(names_missing_from(&first, &names), names.to_vec());

        let files = ensure_dev_certs_for(dir.path(), &names).unwrap();
        // The CA keeps its key (its certificate is widened to permit the new names).
        assert_eq!(fs::read(&files.ca_key).unwrap(), ca_key, "the CA is kept");
        verify(&files.ca_cert, &files.server_cert, "broker-1.example").unwrap();
        assert_ne!(fs::read(&files.server_cert).unwrap(), server);
        assert!(names_missing_from(&files, &names).is_empty());
        server_config(&files.server_files()).unwrap();

        // Nothing new asked: nothing rewritten; an unspecified address is not a name.
        let reissued = fs::read(&files.server_cert).unwrap();
        ensure_dev_certs_for(dir.path(), &["0.0.0.0".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        assert_eq!(fs::read(&files.server_cert).unwrap(), reissued);

        // A new address keeps the old DNS names.
        let files = ensure_dev_certs_for(dir.path(), &["10.1.2.3".to_owned()]).unwrap();
        assert!(names_missing_from(
            &files,
            &["10.1.2.3".to_owned(), "broker-1.example".to_owned()]
        )
        .is_empty());
    }

    #[test]
    fn a_dev_server_key_that_does_not_match_its_certificate_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        fs::write(&files.server_key, other.serialize_pem()).unwrap();
        assert!(server_config(&files.server_files()).is_err());
        ensure_dev_certs(dir.path()).unwrap();
        server_config(&files.server_files()).unwrap();
    }

    #[test]
    fn a_partial_dev_ca_is_reported_and_missing_server_files_are_issued() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        // A CA without its key cannot sign: reported, not replaced (clients trust it).
        fs::remove_file(&files.ca_key).unwrap();
        let err = ensure_dev_certs(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::IncompleteDevDir {
                    missing: "ca.key",
                    ..
                }
            ),
            "{err}"
        );
        // A CA whose server files are gone issues new ones (a CA made by `make_dev_ca`).
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let ca = fs::read(&files.ca_cert).unwrap();
        fs::remove_file(&files.server_key).unwrap();
        fs::remove_file(&files.server_cert).unwrap();
        ensure_dev_certs(dir.path()).unwrap();
        assert_eq!(fs::read(&files.ca_cert).unwrap(), ca);
        server_config(&files.server_files()).unwrap();
    }
}
