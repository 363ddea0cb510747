//! Reading a CA certificate handed in as PEM: exactly one `CERTIFICATE` block, holding an X.509
//! certificate of a CA. The authority (`Authority::from_pem`) and the trust store installer both
//! take one.

use x509_parser::certificate::X509Certificate;

use crate::CaError;

pub(crate) fn invalid(reason: &str) -> CaError {
    CaError::InvalidCaCert {
        reason: reason.to_owned(),
    }
}

/// Checks `text` and hands the parsed certificate and its DER to `read`, which takes what it
/// needs (the certificate borrows the DER, so it cannot outlive this call).
pub(crate) fn read_ca_pem<T>(
    text: &str,
    read: impl FnOnce(&X509Certificate<'_>, &[u8]) -> Result<T, CaError>,
) -> Result<T, CaError> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|_| invalid("not a PEM certificate"))?;
    if pem.label != "CERTIFICATE" {
        return Err(invalid("PEM block is not a CERTIFICATE"));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("more than one PEM block"));
    }
    let cert = pem
        .parse_x509()
        .map_err(|_| invalid("not an X.509 certificate"))?;
    if !cert.is_ca() {
        return Err(invalid("not a CA certificate (basicConstraints CA:false)"));
    }
    read(&cert, &pem.contents)
}
