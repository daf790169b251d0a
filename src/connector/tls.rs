//! TLS for every outgoing connection: rustls with the *ring* crypto provider.
//!
//! Owns the client configurations (the operating system's roots by default; per target an
//! extra CA file, a client certificate and key for mutual TLS, or `insecureSkipVerify`), the
//! ALPN offer (HTTP/2, then HTTP/1.1), the HTTP clients built on them (one per thread and per
//! configuration, so keep-alive connections are pooled), and turning a failed handshake into a
//! [`TlsError`] that says what is wrong. Does not own which target uses which options
//! (`target`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

/// A target's TLS options (`tls` in the target), all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsOptions {
    /// A PEM file of extra CA certificates, trusted beside the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// A PEM certificate chain presented to the server (mutual TLS), with `keyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// The PEM private key of `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Accept any server certificate. For tests against self-signed servers only: the
    /// connection is encrypted but not authenticated, and the gateway warns about it at
    /// start-up and in `/health`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// Every problem with the options, as `(field, message)` relative to `tls`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            let missing = if self.cert_file.is_some() {
                "keyFile"
            } else {
                "certFile"
            };
            out.push((
                missing.to_string(),
                "certFile and keyFile go together (mutual TLS needs both)".to_string(),
            ));
        }
        if let Err(error) = client_config(self) {
            let field = match &error {
                TlsError::Config { field, .. } => field.clone(),
                _ => "tls".into(),
            };
            if !out.iter().any(|(f, _)| *f == field) {
                out.push((field, error.to_string()));
            }
        }
        out
    }
}

/// What went wrong with TLS, in the words an operator needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The server's certificate does not chain to a trusted root (self-signed, private CA).
    #[error(
        "TLS error: the server's certificate is not trusted ({0}); add its CA with tls.caFile"
    )]
    Untrusted(String),
    /// The certificate is valid, but not for the host name connected to.
    #[error("TLS error: the server's certificate is not valid for this host name ({0})")]
    NameMismatch(String),
    #[error("TLS error: the server's certificate has expired or is not valid yet ({0})")]
    Expired(String),
    /// Anything else in the handshake: a protocol mismatch, a refused client certificate.
    #[error("TLS error: the handshake failed: {0}")]
    Handshake(String),
    /// The options themselves: an unreadable CA file, a key that does not parse.
    #[error("{message}")]
    Config { field: String, message: String },
}

impl TlsError {
    /// The stable name of the failure, for API details.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::Untrusted(_) => "untrusted_certificate",
            TlsError::NameMismatch(_) => "name_mismatch",
            TlsError::Expired(_) => "expired_certificate",
            TlsError::Handshake(_) => "handshake_failed",
            TlsError::Config { .. } => "invalid_tls_options",
        }
    }

    /// Finds a TLS failure anywhere in an error's chain (I/O errors wrap rustls's).
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<TlsError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(TlsError::from_rustls(tls));
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if let Some(inner) = io.get_ref() {
                    if let Some(tls) = TlsError::find(inner) {
                        return Some(tls);
                    }
                }
                // h2 keeps only the text of the I/O errors it passes on, so a TLS alert that
                // arrives on an HTTP/2 connection is recognised by rustls's wording.
                let text = io.to_string();
                if text.starts_with("received fatal alert") {
                    return Some(TlsError::Handshake(text));
                }
            }
            current = e.source();
        }
        None
    }

    /// The TLS failure behind a failed request, if that is what it was (awc's errors do not
    /// chain their sources, so the variants that carry I/O are opened here).
    pub fn from_send_error(error: &awc::error::SendRequestError) -> Option<TlsError> {
        use actix_web::error::ParseError;
        use awc::error::{ConnectError, SendRequestError as S};
        match error {
            S::Connect(ConnectError::Io(io)) | S::Send(io) | S::Response(ParseError::Io(io)) => {
                TlsError::find(io)
            }
            // A server that refuses the client's certificate says so after the handshake
            // (TLS 1.3), so the alert arrives while the request is under way.
            S::H2(h2) | S::Connect(ConnectError::H2(h2)) => {
                h2.get_io().and_then(|io| TlsError::find(io))
            }
            _ => None,
        }
    }

    fn from_rustls(error: &rustls::Error) -> TlsError {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(cert) => {
                let detail = format!("{cert:?}");
                match cert {
                    C::NotValidForName | C::NotValidForNameContext { .. } => {
                        TlsError::NameMismatch(detail)
                    }
                    C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. } => TlsError::Expired(detail),
                    _ => TlsError::Untrusted(detail),
                }
            }
            other => TlsError::Handshake(other.to_string()),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The operating system's trusted roots, read once. A store that cannot be read leaves only
/// the CAs a target names (logged once).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "A system CA certificate could not be read.");
        }
        if found.certs.is_empty() {
            tracing::warn!(
                "No system CA certificates found: only a target's tls.caFile is trusted."
            );
        }
        found.certs
    })
}

fn config_error(field: &str, message: String) -> TlsError {
    TlsError::Config {
        field: field.to_string(),
        message,
    }
}

/// The client configuration for `options` (the default one is built once and shared).
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if *options == TlsOptions::default() {
        if let Some(config) = DEFAULT.get() {
            return Ok(config.clone());
        }
        let config = build(options)?;
        return Ok(DEFAULT.get_or_init(|| config).clone());
    }
    build(options)
}

fn build(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = &options.ca_file {
        let certs = read_certs(path).map_err(|m| config_error("caFile", m))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| config_error("caFile", format!("'{path}': {e}")))?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|m| config_error("certFile", m))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| config_error("keyFile", format!("'{key}': {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                config_error("keyFile", format!("the key does not fit certFile: {e}"))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if options.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())));
    }
    Ok(Arc::new(config))
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read '{path}': {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("'{path}' is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("'{path}' holds no PEM certificate"));
    }
    Ok(certs)
}

/// `insecureSkipVerify`: any certificate is accepted, but the handshake's signatures are
/// still checked, so the session is at least bound to the key the server showed.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// HTTP clients kept per thread (one per distinct TLS options).
const MAX_CLIENTS: usize = 64;

thread_local! {
    /// awc clients are per thread; keep-alive connections are pooled inside each.
    static CLIENTS: RefCell<HashMap<TlsOptions, awc::Client>> = RefCell::new(HashMap::new());
}

/// This thread's pooled HTTP client for `options` (plain HTTP and HTTPS alike).
pub fn http_client(options: &TlsOptions) -> Result<awc::Client, TlsError> {
    if let Some(client) = CLIENTS.with(|c| c.borrow().get(options).cloned()) {
        return Ok(client);
    }
    let connector = awc::Connector::new().rustls_0_23(client_config(options)?);
    let client = awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .finish();
    CLIENTS.with(|c| {
        let mut clients = c.borrow_mut();
        // Options are few (one per target's TLS settings); a plugin that varies them in
        // `onConnect` must not grow the table for ever. Rebuilt clients re-read their files.
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(options.clone(), client.clone());
    });
    Ok(client)
}

/// This thread's pooled client with the default options (the system's roots).
pub fn default_client() -> awc::Client {
    http_client(&TlsOptions::default()).expect("the default TLS configuration always builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_or_unreadable_files_are_named() {
        let only_cert = TlsOptions {
            cert_file: Some("/nonexistent/cert.pem".into()),
            ..TlsOptions::default()
        };
        let problems = only_cert.problems();
        assert!(problems.iter().any(|(f, _)| f == "keyFile"), "{problems:?}");
        let bad_ca = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let problems = bad_ca.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "caFile");
        assert!(
            problems[0].1.contains("/nonexistent/ca.pem"),
            "{problems:?}"
        );
        assert!(TlsOptions::default().problems().is_empty());
    }

    #[test]
    fn handshake_failures_are_classified() {
        use rustls::CertificateError as C;
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(C::UnknownIssuer),
        );
        assert_eq!(
            TlsError::find(&io).unwrap().reason(),
            "untrusted_certificate"
        );
        let name = rustls::Error::InvalidCertificate(C::NotValidForName);
        assert_eq!(TlsError::find(&name).unwrap().reason(), "name_mismatch");
        let expired = rustls::Error::InvalidCertificate(C::Expired);
        assert_eq!(
            TlsError::find(&expired).unwrap().reason(),
            "expired_certificate"
        );
        let plain = std::io::Error::other("connection refused");
        assert!(TlsError::find(&plain).is_none());
    }
}
