//! TLS for the three listeners and for peer calls.
//!
//! The data plane and the control API may serve HTTPS (`--tls-cert`, `--tls-key`). The peer
//! endpoint may require mutual TLS (`--peer-tls-cert`, `--peer-tls-key`, `--peer-tls-ca`): it
//! then accepts only clients presenting a certificate signed by that CA, and a node calling its
//! peers trusts only that CA and presents its own certificate. A plaintext peer, or one whose
//! certificate comes from another CA, fails the handshake before any request is read.
//!
//! A peer certificate also names the node it belongs to, as the DNS name `node-<id>.switchboard`
//! among its subject alternative names ([`node_name`]; `scripts/gen-certs.sh` adds it): a node
//! refuses a peer request whose certificate does not name the node the request claims to come
//! from, so a certificate issued to node 2 cannot speak as node 3.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Peer mutual TLS: this node's identity and the CA every peer must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    pub identity: Identity,
    pub ca: PathBuf,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A server configuration; with `client_ca`, clients must present a certificate it signed.
pub fn server_config(identity: &Identity, client_ca: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots(ca)?)).build().map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(certs(&identity.cert)?, key(&identity.key)?).map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side of peer mutual TLS: trust only the cluster CA, present this node's identity.
pub fn peer_client_config(tls: &PeerTls) -> Result<rustls::ClientConfig, String> {
    rustls::ClientConfig::builder()
        .with_root_certificates(roots(&tls.ca)?)
        .with_client_auth_cert(certs(&tls.identity.cert)?, key(&tls.identity.key)?)
        .map_err(|e| e.to_string())
}

/// The DNS name a peer certificate carries for node `id`.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.switchboard")
}

/// True when `certificate` names node `id` (see [`node_name`]).
pub fn names_node(certificate: &CertificateDer<'_>, id: u64) -> bool {
    let Ok(certificate) = webpki::EndEntityCert::try_from(certificate) else { return false };
    let Ok(name) = rustls_pki_types::ServerName::try_from(node_name(id)) else { return false };
    certificate.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Checks at start that this node's own peer certificate names it, so that a wrong certificate
/// is one clear line instead of every peer refusing the node.
pub fn check_peer_identity(tls: &PeerTls, node_id: u64) -> Result<(), String> {
    let chain = certs(&tls.identity.cert)?;
    if names_node(&chain[0], node_id) {
        return Ok(());
    }
    Err(format!(
        "{}: the certificate does not name node {node_id} (a subject alternative name DNS:{} is needed; scripts/gen-certs.sh adds it)",
        tls.identity.cert.display(),
        node_name(node_id)
    ))
}
