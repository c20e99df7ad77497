//! Connecting to a database named by a URL, with TLS as its `sslmode` asks, in libpq's
//! meanings: `prefer` and `require` encrypt without checking the certificate (unless a
//! root certificate is given), `verify-ca` checks the chain, `verify-full` the host name
//! too. Trusted roots come from `sslrootcert` (a PEM file, or `system`) or
//! `~/.postgresql/root.crt`, as for psql and pg_dump.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::database_url::{DatabaseUrl, SslMode};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Db(#[from] postgres::Error),
    #[error(
        "sslmode={mode} checks the server's certificate, but no root certificate was given: \
         add sslrootcert=/path/to/ca.pem (or sslrootcert=system for the system's roots) to the URL, \
         or put the CA in ~/.postgresql/root.crt"
    )]
    NoRootCertificate { mode: &'static str },
    #[error("cannot read root certificates from {path}: {reason}")]
    RootCertificate { path: String, reason: String },
    #[error("cannot set up TLS")]
    Tls(#[from] rustls::Error),
}

/// Connects `config` (from `url`, application name and timeouts already set) to the
/// server, with the TLS the URL asks for.
pub fn connect(
    url: &DatabaseUrl,
    config: &postgres::Config,
) -> Result<postgres::Client, ConnectError> {
    let mode = url.ssl_mode();
    // PostgreSQL never speaks TLS on a unix socket; libpq skips it there too.
    let only_sockets = config
        .get_hosts()
        .iter()
        .all(|host| matches!(host, postgres::config::Host::Unix(_)));
    if mode == SslMode::Disable || (only_sockets && !config.get_hosts().is_empty()) {
        return Ok(config.connect(postgres::NoTls)?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(url)?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?
        }
        (_, Some(roots)) => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        )),
        (SslMode::VerifyFull, None) => {
            return Err(ConnectError::NoRootCertificate {
                mode: "verify-full",
            })
        }
        (SslMode::VerifyCa, None) => {
            return Err(ConnectError::NoRootCertificate { mode: "verify-ca" })
        }
        (_, None) => Arc::new(EncryptOnly(provider.clone())),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))?)
}

/// The trusted roots libpq would use, if any.
fn roots(url: &DatabaseUrl) -> Result<Option<RootCertStore>, ConnectError> {
    let mut store = RootCertStore::empty();
    let file = match url.ssl_root_cert() {
        Some(system) if system == "system" => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ConnectError::RootCertificate {
                    path: "the system's trust store".into(),
                    reason: "no certificate could be loaded".into(),
                });
            }
            return Ok(Some(store));
        }
        Some(path) => PathBuf::from(path),
        None => {
            let default = std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".postgresql/root.crt"));
            match default.filter(|p| p.is_file()) {
                Some(path) => path,
                None => return Ok(None),
            }
        }
    };
    let unreadable = |reason: String| ConnectError::RootCertificate {
        path: file.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file)
        .map_err(|e| unreadable(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(unreadable("no PEM certificate in it".into()));
    }
    // libpq checks the chain whenever a root file is present, even for `require`.
    Ok(Some(store))
}

/// `verify-ca`: the chain must lead to a trusted root; the name may differ.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, certificate unchecked,
/// as libpq does (the handshake signatures are still checked).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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
