//! Certificates for the webhook: a CA and a serving certificate signed by it, in PEM.
//! Used by `serve --dev` (in memory) and `rwop-guard certs` (written to files).

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SigningKey,
};
use time::OffsetDateTime;

/// A CA and a serving certificate it signed, all PEM.
pub struct GeneratedCerts {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot generate certificates: {0}")]
pub struct CertError(rcgen::Error);

// Not `#[from]`: the message holds the cause, which is then not also a `source()`.
impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        Self(e)
    }
}

/// Generates a CA and a serving certificate for `dns_names` and `ips`, valid for `validity`
/// from now (backdated by an hour against clock skew).
pub fn generate(
    common_name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> Result<GeneratedCerts, CertError> {
    let (not_before, not_after) = window(validity);
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name(&format!("{common_name} CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let (cert_pem, key_pem) = sign_serving(&ca, common_name, dns_names, ips, validity)?;
    Ok(GeneratedCerts {
        ca_cert_pem: ca.pem(),
        ca_key_pem,
        cert_pem,
        key_pem,
    })
}

/// A new serving certificate signed by an existing CA (PEM certificate and key): (certificate
/// PEM, key PEM).
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> Result<(String, String), CertError> {
    let ca = Issuer::from_ca_cert_pem(ca_cert_pem, KeyPair::from_pem(ca_key_pem)?)?;
    sign_serving(&ca, common_name, dns_names, ips, validity)
}

fn window(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - time::Duration::hours(1), now + validity)
}

fn sign_serving(
    ca: &Issuer<'_, impl SigningKey>,
    common_name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> Result<(String, String), CertError> {
    let (not_before, not_after) = window(validity);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name = name(common_name);
    // An ECDSA key signs; it never enciphers a key (RFC 5480 §3), so no keyEncipherment.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "rwop-guard");
    dn
}

/// The DNS names the API server may use to reach a Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}
