//! `rwop-guard certs`: what it writes, what it refuses, and renewal from an existing CA.

use rwop_test_support as support;

use std::path::Path;

use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

use support::binary::{self, run};

struct Cert {
    der: Vec<u8>,
}

impl Cert {
    fn read(path: &Path) -> Self {
        let pem = std::fs::read(path).unwrap();
        let (_, pem) = parse_x509_pem(&pem).unwrap();
        Self { der: pem.contents }
    }

    fn parsed(&self) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(&self.der).unwrap().1
    }

    /// Subject alternative names as `DNS:x` / `IP:x`.
    fn sans(&self) -> Vec<String> {
        let cert = self.parsed();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    format!("IP:{}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn signed_by(&self, ca: &Cert) -> bool {
        let ca = ca.parsed();
        self.parsed()
            .verify_signature(Some(ca.public_key()))
            .is_ok()
    }
}

fn certs(out: &Path, extra: &[&str]) -> binary::Run {
    let out = out.to_str().unwrap();
    let mut args = vec!["certs", "--out", out];
    args.extend(extra);
    run(&args, b"")
}

#[test]
fn extra_sans_and_an_ecdsa_key_usage() {
    let dir = tempfile::tempdir().unwrap();
    let r = certs(
        dir.path(),
        &[
            "--service",
            "guard",
            "--namespace",
            "storage",
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let leaf = Cert::read(&dir.path().join("tls.crt"));
    assert_eq!(
        leaf.sans(),
        [
            "DNS:guard.storage.svc",
            "DNS:guard.storage.svc.cluster.local",
            "DNS:guard.storage",
            "DNS:guard",
            "DNS:localhost",
            "IP:127.0.0.1"
        ]
    );
    let parsed = leaf.parsed();
    let usage = parsed.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature());
    assert!(
        !usage.key_encipherment(),
        "an ECDSA key cannot encipher keys"
    );
    assert!(leaf.signed_by(&Cert::read(&dir.path().join("ca.crt"))));
}

#[test]
fn names_and_days_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (args, wanted) in [
        (
            vec!["--service", ""],
            "'--service <NAME>': \"\" is not a DNS label",
        ),
        (vec!["--service", "Guard"], "\"Guard\" is not a DNS label"),
        (vec!["--namespace", "a.b"], "\"a.b\" is not a DNS label"),
        (vec!["--namespace=-x"], "\"-x\" is not a DNS label"),
        (vec!["--days", "0"], "0 is not in 1..=36500"),
        (vec!["--dns", "bad_name"], "\"bad_name\" is not a DNS name"),
        (
            vec!["--ip", "localhost"],
            "invalid value 'localhost' for '--ip <ADDR>'",
        ),
    ] {
        let r = certs(dir.path(), &args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stderr.contains(wanted), "{args:?}: {}", r.stderr);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{args:?} wrote files"
        );
    }
}

#[test]
fn reuse_ca_issues_a_new_serving_certificate_from_the_existing_ca() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(certs(dir.path(), &[]).code, 0);
    let ca_before = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let key_before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let leaf_before = std::fs::read(dir.path().join("tls.crt")).unwrap();

    // Without a choice, nothing is overwritten, and the message names both ways out.
    let again = certs(dir.path(), &[]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("--reuse-ca") && again.stderr.contains("--force"),
        "{}",
        again.stderr
    );

    let renewed = certs(dir.path(), &["--reuse-ca", "--ip", "127.0.0.1"]);
    assert_eq!(renewed.code, 0, "{}", renewed.stderr);
    assert!(
        renewed.stdout.contains("signed by the existing ca.crt"),
        "{}",
        renewed.stdout
    );
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca_before);
    assert_eq!(
        std::fs::read(dir.path().join("ca.key")).unwrap(),
        key_before
    );
    assert_ne!(
        std::fs::read(dir.path().join("tls.crt")).unwrap(),
        leaf_before
    );
    let leaf = Cert::read(&dir.path().join("tls.crt"));
    assert!(leaf.signed_by(&Cert::read(&dir.path().join("ca.crt"))));
    assert!(leaf.sans().contains(&"IP:127.0.0.1".to_owned()));

    // --reuse-ca without a CA says where it looked.
    let empty = tempfile::tempdir().unwrap();
    let r = certs(empty.path(), &["--reuse-ca"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--reuse-ca needs the CA in"),
        "{}",
        r.stderr
    );
}
