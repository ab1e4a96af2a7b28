//! The host's root certificates, checked before the SQS client is built. The agent reaches SQS
//! over HTTPS and the AWS SDK trusts the system's roots; on a host without any (a minimal image
//! with no `ca-certificates`) the SDK's TLS setup panics. This turns that into an error that
//! says what to install.
//!
//! Keeps the guarantee "A host without CA certificates gets an error, not a panic".

/// No root certificate could be read from the system.
#[derive(Debug, thiserror::Error)]
#[error(
    "no CA certificates found on this host{detail}: the agent verifies SQS's TLS certificate \
     against the system's root certificates. Install them (Debian: apt-get install \
     ca-certificates) or point SSL_CERT_FILE or SSL_CERT_DIR at a bundle"
)]
pub struct NoRootCertificates {
    /// What the loader reported, if anything (`" (…)"`).
    detail: String,
}

/// Whether the system's root certificates can be read, where the SDK will look for them
/// (`SSL_CERT_FILE`, `SSL_CERT_DIR`, then the platform's usual places).
pub fn check() -> Result<(), NoRootCertificates> {
    let found = rustls_native_certs::load_native_certs();
    if !found.certs.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    Err(NoRootCertificates {
        detail: if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        },
    })
}
