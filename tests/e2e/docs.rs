//! The docs' commands on a real control plane: every `<!-- docs-test: e2e NAME -->` block of
//! README.md and docs/*.md, run by name, as an admin would run it from a checkout: with bash
//! (`-e -o pipefail`), in a directory of its own where `./charts/rwop-guard` is the repository's
//! chart, with kubectl, helm and the rwop-guard binary first in `PATH` and this cluster's
//! kubeconfig in `KUBECONFIG`. Each block's text is run as written, but for one substitution:
//!
//! * `kubectl … rollout status deploy/X` runs as `kubectl … get deploy/X`: the harness runs no
//!   kubelet (nor scheduler), so the webhook's pods never become ready and a rollout never ends.
//!
//! The names are those of tests/fixtures/docs-e2e-blocks.txt, in the order listed there (the
//! install page's: install, verify, mutation, upgrade, uninstall; the other TLS mode; the other
//! engine; without Helm; reports), which tests/docs.rs checks against the docs too. A block in
//! the docs without a runner here, or a runner without its block, fails the case.
//!
//! The release is `rwop-guard` in the namespace `rwop-guard`, as the docs name it: its objects
//! (`rwop-guard`, `rwop-guard-access-modes`, …) are not those of the shared webhook (release
//! `e2e`) or of the other cases' releases (`guard`, `diff`). Exclusive: while the release's
//! admission policies are installed they decide for every volume of the cluster. Everything the
//! case creates is removed at the end, whatever happened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::Case;
use crate::harness::{CSI_CLASS, Env, Out, claim, csi_volume, run_tool, tool, wait_until};

pub fn cases() -> Vec<Case> {
    vec![Case::exclusive(
        "docs::commands_in_the_docs_run_against_a_real_control_plane",
        commands,
    )]
}

type Runner = fn(&Docs, &Block) -> anyhow::Result<()>;

/// The runners, in the order they run (that of the fixture's list).
const RUNNERS: &[(&str, Runner)] = &[
    ("install-helm", install_helm),
    ("verify", verify),
    ("mutation", mutation),
    ("upgrade", upgrade),
    ("uninstall", uninstall),
    ("install-secret", install_secret),
    ("engines-intree", engines_intree),
    ("policy-export", policy_export),
    ("reports-get", reports_get),
    ("delete-reports", delete_reports),
];

const RELEASE: &str = "rwop-guard";
const NAMESPACE: &str = "rwop-guard";
/// Object names of the release (its full name is the release name) and of `policy export`'s
/// default prefix: nothing else in the suite starts with it.
const PREFIX: &str = "rwop-guard-";
const ADMISSION_POLICIES: &str = "validatingadmissionpolicies,validatingadmissionpolicybindings,\
                                  mutatingadmissionpolicies,mutatingadmissionpolicybindings";
/// The `[ReadWriteOnce]` volume `verify` patches: its name sorts before the suite's others, so
/// the block's `cut -d' ' -f1` picks it.
const VERIFY_PV: &str = "a-docs-verify";
/// A namespace with a claim, so that `scan --apply` writes a Report the blocks can get.
const REPORTS_NS: &str = "rwop-docs-reports";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=rwop-guard";
const OPEN_REPORTS_CRDS: [&str; 2] = ["reports.openreports.io", "clusterreports.openreports.io"];
/// The default policy, as docs/policy.md shows it: what `policy-export` exports.
const DEFAULT_POLICY: &str = "\
validation:
  action: deny
mutation:
  enabled: false
  storageClasses: []
  namespaces: []
  excludeNamespaces: [kube-system]
  namespaceSelector: {}
  provisioners:
    allow: []
    deny: []
workloads:
  action: warn
";

/// One e2e block: where it is, and its text.
struct Block {
    at: String,
    text: String,
}

/// The `e2e` blocks of README.md and docs/*.md, by name.
fn blocks_in_docs() -> anyhow::Result<BTreeMap<String, Block>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["README.md".to_owned()];
    let mut pages: Vec<String> = std::fs::read_dir(root.join("docs"))?
        .map(|e| Ok(e?.path()))
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            format!(
                "docs/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    pages.sort();
    files.extend(pages);
    let mut blocks = BTreeMap::new();
    for file in files {
        let text =
            std::fs::read_to_string(root.join(&file)).with_context(|| format!("reading {file}"))?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line
                .trim()
                .strip_prefix("<!-- docs-test: e2e ")
                .and_then(|r| r.strip_suffix("-->"))
                .map(str::trim)
            else {
                continue;
            };
            let fence = (i + 1..lines.len())
                .find(|&j| !lines[j].trim().is_empty())
                .filter(|&j| lines[j].trim() == "```sh")
                .with_context(|| format!("{file}:{}: e2e marker without a ```sh block", i + 1))?;
            let end = (fence + 1..lines.len())
                .find(|&j| lines[j].trim() == "```")
                .with_context(|| format!("{file}:{}: unclosed fence", fence + 1))?;
            let block = Block {
                at: format!("{file}:{}", fence + 1),
                text: lines[fence + 1..end].join("\n") + "\n",
            };
            if let Some(other) = blocks.insert(name.to_owned(), block) {
                anyhow::bail!("e2e block {name} twice: {} and {file}", other.at);
            }
        }
    }
    Ok(blocks)
}

fn commands(env: &Env) -> anyhow::Result<()> {
    let names = rwop_test_support::fixtures::docs_e2e_blocks();
    let listed: Vec<&str> = names.iter().map(String::as_str).collect();
    let runners: Vec<&str> = RUNNERS.iter().map(|(n, _)| *n).collect();
    anyhow::ensure!(
        runners == listed,
        "the runners of tests/e2e/docs.rs ({runners:?}) are not the blocks \
         tests/fixtures/docs-e2e-blocks.txt lists, in its order ({listed:?})"
    );
    let blocks = blocks_in_docs()?;
    let in_docs: Vec<&str> = blocks.keys().map(String::as_str).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    anyhow::ensure!(
        in_docs == sorted,
        "the docs' e2e blocks ({in_docs:?}) are not those with a runner ({sorted:?})"
    );

    let dir = tempfile::Builder::new().prefix("rwop-docs-").tempdir()?;
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts"),
        dir.path().join("charts"),
    )?;
    let docs = Docs {
        env,
        dir: dir.path().to_owned(),
        delete_crds: std::cell::Cell::new(false),
    };
    let result = RUNNERS.iter().try_for_each(|(name, run)| {
        let block = &blocks[*name];
        run(&docs, block).with_context(|| format!("block {name} ({})", block.at))
    });
    drop(docs);
    result?;
    // Nothing left behind.
    let left = env.kubectl(&["get", "namespace", NAMESPACE, REPORTS_NS, "-o", "name"]);
    anyhow::ensure!(left.stdout.is_empty(), "left behind: {left:#?}");
    anyhow::ensure!(prefixed(env, ADMISSION_POLICIES)?.is_empty());
    Ok(())
}

/// Where the blocks run, and what the case must remove.
struct Docs<'a> {
    env: &'a Env,
    dir: PathBuf,
    /// The OpenReports CRDs were installed by this case (no other case had).
    delete_crds: std::cell::Cell<bool>,
}

impl Docs<'_> {
    /// The block's text, with its documented substitution, run with bash.
    fn run(&self, block: &Block) -> Out {
        let script = block.text.replace("rollout status deploy/", "get deploy/");
        self.env.shell(&script, &self.dir)
    }

    /// Runs the block; an error with what it printed unless it exited 0.
    fn run_ok(&self, block: &Block) -> anyhow::Result<Out> {
        let out = self.run(block);
        anyhow::ensure!(out.ok(), "{}\n{out:#?}", block.text);
        Ok(out)
    }

    fn helm(&self, args: &[&str]) -> Out {
        run_tool(
            std::process::Command::new(tool("helm"))
                .args(args)
                .args(["--namespace", NAMESPACE])
                .env("KUBECONFIG", &self.env.plane.kubeconfig),
        )
    }

    /// The release's revision (`helm status`).
    fn revision(&self) -> anyhow::Result<u64> {
        let status: Value = serde_json::from_str(
            &self
                .helm(&["status", RELEASE, "-o", "json"])
                .success()?
                .stdout,
        )?;
        anyhow::ensure!(status["info"]["status"] == "deployed", "{status:#}");
        status["version"].as_u64().context("no revision")
    }

    /// The release's user-supplied values (`helm get values`).
    fn values(&self) -> anyhow::Result<Value> {
        let out = self.helm(&["get", "values", RELEASE, "-o", "json"]);
        Ok(serde_json::from_str(&out.success()?.stdout)?)
    }

    /// `helm uninstall` and the namespace deleted: each TLS mode and engine of the docs starts
    /// from a cluster without the release.
    fn remove_release(&self) -> anyhow::Result<()> {
        let out = self.helm(&["uninstall", RELEASE, "--wait", "--ignore-not-found"]);
        out.success()?;
        self.env
            .kubectl(&[
                "delete",
                "namespace",
                NAMESPACE,
                "--ignore-not-found",
                "--timeout=120s",
            ])
            .success()?;
        Ok(())
    }
}

impl Drop for Docs<'_> {
    fn drop(&mut self) {
        let env = self.env;
        let failed = std::cell::RefCell::new(Vec::new());
        let check = |what: &str, out: Out| {
            if !out.ok() {
                failed.borrow_mut().push(format!("{what}: {out:#?}"));
            }
        };
        check(
            "helm uninstall",
            self.helm(&["uninstall", RELEASE, "--wait", "--ignore-not-found"]),
        );
        if self.delete_crds.get() {
            let mut args = vec!["delete", "crd", "--ignore-not-found", "--wait"];
            args.extend(OPEN_REPORTS_CRDS);
            check("delete the CRDs", env.kubectl(&args));
        } else {
            for kind in ["reports", "clusterreports"] {
                // The CRDs may not exist (the case failed before installing them).
                let _ = env.kubectl(&["delete", kind, "-A", "-l", MANAGED_BY]);
            }
        }
        check(
            "delete the namespaces",
            env.kubectl(&[
                "delete",
                "namespace",
                NAMESPACE,
                REPORTS_NS,
                "--ignore-not-found",
                "--timeout=120s",
            ]),
        );
        match prefixed(env, ADMISSION_POLICIES) {
            Ok(names) if !names.is_empty() => {
                let mut args = vec!["delete", "--ignore-not-found"];
                args.extend(names.iter().map(String::as_str));
                check("delete the admission policies", env.kubectl(&args));
            }
            Ok(_) => {}
            Err(e) => failed
                .borrow_mut()
                .push(format!("list the admission policies: {e:#}")),
        }
        check(
            "delete the volume",
            env.kubectl(&[
                "delete",
                "pv",
                VERIFY_PV,
                "--ignore-not-found",
                "--timeout=60s",
            ]),
        );
        for f in failed.into_inner() {
            eprintln!("docs: clean-up: {f}");
        }
    }
}

/// `kind/name` of the objects of `kinds` whose name starts with [`PREFIX`].
fn prefixed(env: &Env, kinds: &str) -> anyhow::Result<Vec<String>> {
    let out = env.kubectl(&["get", kinds, "-o", "name"]).success()?;
    Ok(out
        .stdout
        .lines()
        .filter(|l| {
            l.split_once('/')
                .is_some_and(|(_, n)| n.starts_with(PREFIX))
        })
        .map(str::to_owned)
        .collect())
}

fn exists(env: &Env, args: &[&str]) -> bool {
    let mut args = args.to_vec();
    args.extend(["-o", "name"]);
    env.kubectl(&args).ok()
}

/// docs/install.md, Install: `helm install` with the image set, then the rollout.
fn install_helm(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let out = docs.run_ok(block)?;
    anyhow::ensure!(docs.revision()? == 1);
    anyhow::ensure!(
        docs.values()?["image"]["repository"] == "REGISTRY/rwop-guard",
        "{:#}",
        docs.values()?
    );
    // What `kubectl get deploy/rwop-guard` printed (no pod is ever ready here).
    anyhow::ensure!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some("rwop-guard")),
        "no Deployment rwop-guard in the output: {out:#?}"
    );
    for object in [
        "validatingadmissionpolicy/rwop-guard-access-modes",
        "validatingadmissionpolicybinding/rwop-guard-access-modes",
        "validatingwebhookconfiguration/rwop-guard",
    ] {
        anyhow::ensure!(exists(docs.env, &["get", object]), "no {object}");
    }
    Ok(())
}

/// docs/install.md, verify: a server-side dry run of an access-mode change on a `[ReadWriteOnce]`
/// volume is denied by the release's ValidatingAdmissionPolicy and changes nothing.
fn verify(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let env = docs.env;
    // Reserved for a claim that never exists: the PV controller binds it to no other case's
    // pending claim (a bound volume's delete would wait on its pv-protection finalizer).
    let mut volume = csi_volume(VERIFY_PV, &["ReadWriteOnce"]);
    volume["spec"]["claimRef"] = serde_json::json!({"namespace": "docs-none", "name": "none"});
    env.apply(&[volume])?;
    let expected = format!(
        "Error from server (Forbidden): persistentvolumes \"{VERIFY_PV}\" is forbidden: \
         ValidatingAdmissionPolicy 'rwop-guard-access-modes' with binding \
         'rwop-guard-access-modes' denied request: PersistentVolume \"{VERIFY_PV}\": access mode \
         change [ReadWriteOnce] -> [ReadWriteMany] is not allowed"
    );
    // The API server loads a new policy and binding within a second or so: until then the dry
    // run succeeds (it writes nothing, so running it again is harmless).
    let mut last = None;
    let denied = wait_until(
        "the release's policy to deny the dry run",
        Duration::from_secs(30),
        || {
            let out = docs.run(block);
            let done = !out.ok() && out.stderr.starts_with(&expected);
            last = Some(out);
            Ok(done.then_some(()))
        },
    );
    denied.with_context(|| format!("expected stderr to start with {expected:?}:\n{last:#?}"))?;
    let modes = env.kubectl(&["get", "pv", VERIFY_PV, "-o", "jsonpath={.spec.accessModes}"]);
    anyhow::ensure!(
        modes.success()?.stdout == r#"["ReadWriteOnce"]"#,
        "the dry run changed the volume"
    );
    Ok(())
}

/// docs/install.md, mutation: `helm upgrade --reuse-values` turns M1 on for the listed class,
/// keeping the values given at install.
fn mutation(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let before = docs.revision()?;
    docs.run_ok(block)?;
    anyhow::ensure!(docs.revision()? == before + 1);
    let values = docs.values()?;
    anyhow::ensure!(
        values["image"]["repository"] == "REGISTRY/rwop-guard"
            && values["policy"]["mutation"]["enabled"] == true
            && values["policy"]["mutation"]["storageClasses"] == json!(["fast-csi"]),
        "{values:#}"
    );
    let policy = docs.env.kubectl(&[
        "get",
        "configmap",
        "rwop-guard-policy",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.policy\\.yaml}",
    ]);
    let policy: Value = serde_saphyr::from_str(&policy.success()?.stdout)?;
    anyhow::ensure!(
        policy["mutation"]["enabled"] == true
            && policy["mutation"]["storageClasses"] == json!(["fast-csi"]),
        "the policy the pods read: {policy:#}"
    );
    // M1 runs in the webhook (engine.mode auto): the release now has a mutating webhook.
    let config = docs
        .env
        .get("mutatingwebhookconfiguration", None, RELEASE)?;
    anyhow::ensure!(
        config["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["name"] == "mutate.rwop-guard.dev"),
        "{config:#}"
    );
    Ok(())
}

/// docs/install.md, Upgrade: the values saved to a file and passed back: one revision more,
/// the same values.
fn upgrade(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let (before, values) = (docs.revision()?, docs.values()?);
    docs.run_ok(block)?;
    anyhow::ensure!(docs.dir.join("rwop-guard-values.yaml").is_file());
    anyhow::ensure!(docs.revision()? == before + 1);
    let after = docs.values()?;
    anyhow::ensure!(
        after == values,
        "values changed:\nbefore {values:#}\nafter {after:#}"
    );
    Ok(())
}

/// docs/install.md, Uninstall: the release's webhook configurations and admission policies
/// (with their bindings) are gone.
fn uninstall(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let out = docs.run_ok(block)?;
    anyhow::ensure!(
        out.stdout.contains("release \"rwop-guard\" uninstalled"),
        "{out:#?}"
    );
    let env = docs.env;
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
    ] {
        anyhow::ensure!(
            !exists(env, &["get", kind, RELEASE]),
            "{kind} {RELEASE} is left"
        );
    }
    let left = prefixed(env, ADMISSION_POLICIES)?;
    anyhow::ensure!(left.is_empty(), "left: {left:?}");
    anyhow::ensure!(!exists(env, &["get", "deploy", RELEASE, "-n", NAMESPACE]));
    Ok(())
}

/// docs/install.md, `tls.mode=secret`: the namespace, a certificate from `rwop-guard certs` in
/// a Secret, and the chart installed with it and its CA.
fn install_secret(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    // The page's TLS modes are alternatives: this one starts from a cluster without the
    // release or its namespace (which `helm uninstall` leaves).
    docs.remove_release()?;
    docs.run_ok(block)?;
    let env = docs.env;
    let secret = env.get("secret", Some(NAMESPACE), "rwop-guard-tls")?;
    anyhow::ensure!(secret["type"] == "kubernetes.io/tls", "{secret:#}");
    anyhow::ensure!(docs.revision()? == 1);
    let values = docs.values()?;
    anyhow::ensure!(
        values["tls"]["mode"] == "secret" && values["tls"]["secretName"] == "rwop-guard-tls",
        "{values:#}"
    );
    // The certificate is valid for the Service, as the page says it must be.
    let cert = std::fs::read(docs.dir.join("certs/out/tls.crt"))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert)?;
    let cert = pem.parse_x509()?;
    let names: Vec<String> = cert
        .subject_alternative_name()?
        .context("no subjectAltName")?
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect();
    anyhow::ensure!(
        names.iter().any(|n| n == "rwop-guard.rwop-guard.svc"),
        "the certificate is not valid for the Service: {names:?}"
    );
    // The webhooks trust the CA `certs` wrote; the pods mount the Secret.
    let ca = std::fs::read_to_string(docs.dir.join("certs/out/ca.crt"))?;
    let compact = |s: &str| s.split_whitespace().collect::<String>();
    let config = env.get("validatingwebhookconfiguration", None, RELEASE)?;
    let webhooks = config["webhooks"].as_array().context("webhooks")?;
    anyhow::ensure!(!webhooks.is_empty());
    for webhook in webhooks {
        let bundle = webhook["clientConfig"]["caBundle"]
            .as_str()
            .context("caBundle")?;
        let bundle = base64::engine::general_purpose::STANDARD.decode(bundle)?;
        anyhow::ensure!(
            compact(&String::from_utf8(bundle)?) == compact(&ca),
            "the caBundle of {} is not certs/out/ca.crt",
            webhook["name"]
        );
    }
    let deployment = env.get("deployment", Some(NAMESPACE), RELEASE)?;
    anyhow::ensure!(
        deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["secret"]["secretName"] == "rwop-guard-tls"),
        "the pods do not mount the Secret: {deployment:#}"
    );
    docs.remove_release()
}

/// docs/engines.md, With Helm: `engine.mode=inTree` installs admission policies only, and the
/// MutatingAdmissionPolicy rewrites a new claim of the listed class.
fn engines_intree(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    docs.run_ok(block)?;
    let env = docs.env;
    let manifest = docs.helm(&["get", "manifest", RELEASE]).success()?;
    let mut kinds: Vec<String> = serde_saphyr::from_multiple::<Value>(&manifest.stdout)?
        .into_iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect();
    kinds.sort();
    kinds.dedup();
    anyhow::ensure!(
        !kinds
            .iter()
            .any(|k| k == "Deployment" || k == "Service" || k.ends_with("WebhookConfiguration")),
        "engine.mode=inTree rendered webhook objects: {kinds:?}"
    );
    anyhow::ensure!(
        kinds.iter().any(|k| k == "MutatingAdmissionPolicy")
            && kinds.iter().any(|k| k == "ValidatingAdmissionPolicy"),
        "{kinds:?}"
    );
    // M1 in the API server: a dry-run claim of the listed class comes back [ReadWriteOncePod]
    // (the shared webhook knows no class fast-csi, so it leaves it alone).
    let claim = claim(
        "docs-intree",
        "default",
        &["ReadWriteOnce"],
        Some("fast-csi"),
    );
    let mut last = None;
    wait_until(
        "the release's MutatingAdmissionPolicy to rewrite a claim",
        Duration::from_secs(30),
        || {
            let out = env.kubectl_stdin(
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                &claim.to_string(),
            );
            let created: Option<Value> = serde_json::from_str(&out.stdout).ok();
            last = Some(out);
            Ok(created
                .filter(|c| c["spec"]["accessModes"] == json!(["ReadWriteOncePod"]))
                .map(|_| ()))
        },
    )
    .with_context(|| format!("{last:#?}"))?;
    docs.remove_release()
}

/// docs/engines.md, Without Helm: `policy export` piped to `kubectl apply` creates the objects,
/// which then decide (and are deleted afterwards).
fn policy_export(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let env = docs.env;
    let policy = docs.dir.join("policy.yaml");
    std::fs::write(&policy, DEFAULT_POLICY)?;
    let out = docs.run_ok(block)?;
    let export = env
        .rwop(
            &[
                "policy",
                "export",
                "--config",
                &policy.to_string_lossy(),
                "--map-version",
                "v1beta1",
                "-o",
                "json",
            ],
            "",
        )
        .success()?;
    let list: Value = serde_json::from_str(&export.stdout)?;
    let items = list["items"].as_array().context("items")?;
    anyhow::ensure!(!items.is_empty());
    for item in items {
        let (kind, name) = (
            item["kind"].as_str().unwrap_or_default().to_lowercase(),
            item["metadata"]["name"].as_str().unwrap_or_default(),
        );
        anyhow::ensure!(
            out.stdout.contains(&format!(
                "{kind}.admissionregistration.k8s.io/{name} created"
            )),
            "{kind} {name} not created: {out:#?}"
        );
    }
    let expected = format!(
        "ValidatingAdmissionPolicy 'rwop-guard-access-modes' with binding \
         'rwop-guard-access-modes' denied request: PersistentVolume \"{VERIFY_PV}\": access mode \
         change [ReadWriteOnce] -> [ReadWriteMany] is not allowed"
    );
    wait_until(
        "the exported policy to deny",
        Duration::from_secs(30),
        || {
            let out = env.kubectl(&[
                "patch",
                "pv",
                VERIFY_PV,
                "--dry-run=server",
                "--type=merge",
                "-p",
                r#"{"spec":{"accessModes":["ReadWriteMany"]}}"#,
            ]);
            Ok(out.stderr.contains(&expected).then_some(()))
        },
    )?;
    env.kubectl_stdin(&["delete", "--wait", "-f", "-"], &export.stdout)
        .success()?;
    Ok(())
}

/// docs/scan.md: the reports `scan --apply` wrote, listed and read (the OpenReports CRDs
/// installed, and a scan applied, first).
fn reports_get(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let env = docs.env;
    let mut args = vec!["get", "crd"];
    args.extend(OPEN_REPORTS_CRDS);
    docs.delete_crds.set(!exists(env, &args));
    crate::reports::install_open_reports(env)?;
    env.namespace(REPORTS_NS)?;
    env.apply(&[claim(
        "data",
        REPORTS_NS,
        &["ReadWriteOncePod"],
        Some(CSI_CLASS),
    )])?;
    env.rwop(&["scan", "--apply"], "").success()?;
    let out = docs.run_ok(block)?;
    anyhow::ensure!(
        out.stdout.lines().any(|l| {
            let mut cells = l.split_whitespace();
            cells.next() == Some(REPORTS_NS) && cells.next() == Some("rwop-guard")
        }),
        "no Report of {REPORTS_NS} listed: {out:#?}"
    );
    anyhow::ensure!(
        out.stdout.contains("kind: ClusterReport")
            && out
                .stdout
                .contains("app.kubernetes.io/managed-by: rwop-guard")
            && out.stdout.contains(&format!("name: {VERIFY_PV}")),
        "the ClusterReport does not show: {out:#?}"
    );
    Ok(())
}

/// docs/install.md, Uninstall: the reports `scan --apply` wrote, deleted.
fn delete_reports(docs: &Docs, block: &Block) -> anyhow::Result<()> {
    let out = docs.run_ok(block)?;
    anyhow::ensure!(
        out.stdout
            .contains("report.openreports.io \"rwop-guard\" deleted")
            && out
                .stdout
                .contains("clusterreport.openreports.io \"rwop-guard\" deleted"),
        "{out:#?}"
    );
    for args in [
        ["get", "reports", "-A", "-l", MANAGED_BY, "-o", "name"].as_slice(),
        ["get", "clusterreports", "-l", MANAGED_BY, "-o", "name"].as_slice(),
    ] {
        let left = docs.env.kubectl(args).success()?;
        anyhow::ensure!(left.stdout.is_empty(), "left: {left:#?}");
    }
    Ok(())
}
