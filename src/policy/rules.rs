//! Validation rules V1 (ReadWriteOncePod stands alone) and V2 (the one allowed mode change), and
//! the W1 warnings on that change.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::Operation;

use super::{
    AccessMode, AccessModes, Action, Claim, Decision, HasAccessModes, MIGRATED_FROM_ANNOTATION,
    Policy, Volume,
};

/// The upstream task this tool automates; linked from messages so users know the way forward.
pub const TASK_URL: &str =
    "https://kubernetes.io/docs/tasks/administer-cluster/change-pv-access-mode-readwriteoncepod/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// ReadWriteOncePod, where present, is the only mode.
    V1,
    /// On update, the only change of the mode set is {ReadWriteOnce} -> {ReadWriteOncePod}.
    V2,
}

impl Rule {
    pub fn id(self) -> &'static str {
        match self {
            Rule::V1 => "V1",
            Rule::V2 => "V2",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    /// The full one-line message: `<subject>: <detail>`.
    pub message: String,
    /// What is wrong and what to do, without the subject (for outputs that name it already).
    pub detail: String,
}

impl Violation {
    fn new(rule: Rule, subject: Subject<'_>, detail: String) -> Self {
        Self {
            rule,
            message: format!("{subject}: {detail}"),
            detail,
        }
    }
}

/// The object a message is about, printed as `PersistentVolumeClaim "shop/orders-db"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    pub kind: &'static str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

impl<'a> Subject<'a> {
    pub fn volume(meta: &'a ObjectMeta) -> Self {
        Self::of("PersistentVolume", meta)
    }

    pub fn claim(meta: &'a ObjectMeta) -> Self {
        Self::of("PersistentVolumeClaim", meta)
    }

    fn of(kind: &'static str, meta: &'a ObjectMeta) -> Self {
        let name = meta
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(meta.generate_name.as_deref())
            .unwrap_or("");
        Self {
            kind,
            namespace: meta.namespace.as_deref().filter(|ns| !ns.is_empty()),
            name,
        }
    }
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace {
            Some(ns) => write!(f, "{} \"{}/{}\"", self.kind, ns, self.name),
            None => write!(f, "{} \"{}\"", self.kind, self.name),
        }
    }
}

/// V1: ReadWriteOncePod must be the only mode wherever it appears.
pub fn exclusive_rwop_violation(subject: Subject<'_>, modes: &AccessModes) -> Option<Violation> {
    (modes.contains(AccessMode::ReadWriteOncePod) && modes.len() > 1).then(|| {
        Violation::new(
            Rule::V1,
            subject,
            format!(
                "access modes {modes} combine ReadWriteOncePod with other modes; \
                 ReadWriteOncePod must be the only access mode: use [ReadWriteOncePod] for a \
                 single writer pod, or remove ReadWriteOncePod"
            ),
        )
    })
}

/// V2: an update may change the mode set only from {ReadWriteOnce} to {ReadWriteOncePod}.
pub fn transition_violation(
    subject: Subject<'_>,
    old: &AccessModes,
    new: &AccessModes,
) -> Option<Violation> {
    if old == new || is_rwo_to_rwop(old, new) {
        return None;
    }
    let rwop = AccessMode::ReadWriteOncePod;
    let message = if old.contains(rwop) || new.contains(rwop) {
        format!(
            "access mode change {old} -> {new} is not allowed; only [ReadWriteOnce] -> \
             [ReadWriteOncePod] is supported ({TASK_URL})"
        )
    } else {
        format!(
            "access mode change {old} -> {new} is not allowed: it does not involve \
             ReadWriteOncePod, and the only change rwop-guard allows is [ReadWriteOnce] -> \
             [ReadWriteOncePod] (nothing checks other changes against the claim bound to the \
             volume); keep {old}"
        )
    };
    Some(Violation::new(Rule::V2, subject, message))
}

/// How to undo a migration, for a V2 denial of a change away from [ReadWriteOncePod] on a
/// volume `migrate` moved.
fn undo_migration_hint(pv: &Volume) -> Option<String> {
    let marked = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIGRATED_FROM_ANNOTATION))
        .is_some();
    marked.then(|| {
        let claim = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| {
                Some(format!(
                    "{}/{}",
                    c.namespace.as_deref()?,
                    c.name.as_deref()?
                ))
            })
            .unwrap_or_else(|| "NAMESPACE/CLAIM".to_owned());
        format!(
            "this volume was moved to [ReadWriteOncePod] by rwop-guard migrate; to undo that \
             safely (claim unbound and rebound, consumers scaled down and back), run: rwop-guard \
             migrate {claim} --rollback"
        )
    })
}

fn is_rwo_to_rwop(old: &AccessModes, new: &AccessModes) -> bool {
    old.is_only(AccessMode::ReadWriteOnce) && new.is_only(AccessMode::ReadWriteOncePod)
}

/// Annotation `rwop-guard migrate` keeps its state in on the PersistentVolume being migrated.
pub const MIGRATION_ANNOTATION: &str = "rwop-guard.dev/migration";

/// Where a recorded migration goes: forward to [ReadWriteOncePod], or back (`--rollback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MigrationTarget {
    ReadWriteOncePod,
    ReadWriteOnce,
}

impl MigrationTarget {
    /// The access mode claim and volume end with.
    pub fn mode(self) -> AccessMode {
        match self {
            MigrationTarget::ReadWriteOncePod => AccessMode::ReadWriteOncePod,
            MigrationTarget::ReadWriteOnce => AccessMode::ReadWriteOnce,
        }
    }

    /// The access mode they start from.
    pub fn source(self) -> AccessMode {
        match self {
            MigrationTarget::ReadWriteOncePod => AccessMode::ReadWriteOnce,
            MigrationTarget::ReadWriteOnce => AccessMode::ReadWriteOncePod,
        }
    }
}

impl fmt::Display for MigrationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.mode().fmt(f)
    }
}

/// The part of the [`MIGRATION_ANNOTATION`] every reader needs: the webhook reads only this,
/// `migrate` reads the whole state (which has this `target` field, of the same type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct RecordedMigration {
    pub target: MigrationTarget,
}

impl RecordedMigration {
    /// The migration recorded on an object, if any and readable.
    pub fn of(meta: &ObjectMeta) -> Option<RecordedMigration> {
        let text = meta.annotations.as_ref()?.get(MIGRATION_ANNOTATION)?;
        serde_json::from_str(text).ok()
    }
}

/// The one reverse change V2 lets through: `rwop-guard migrate --rollback` moving a volume back
/// from [ReadWriteOncePod] to [ReadWriteOnce]. It must be deliberate and harmless: the volume
/// already carried (before this update) a migration state whose target is ReadWriteOnce, and it
/// is not bound to a claim (no `claimRef.uid`), so no pod can be using it under the old mode.
fn is_recorded_rollback(old: &Volume, new: &Volume) -> bool {
    let rollback = RecordedMigration::of(&old.metadata)
        .is_some_and(|r| r.target == MigrationTarget::ReadWriteOnce);
    let unbound = new
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_none_or(|c| c.uid.as_deref().unwrap_or("").is_empty());
    rollback && unbound
}

/// V1 and V2 for a PersistentVolume, plus the W1 warnings on an allowed RWO -> RWOP change.
pub fn validate_volume(
    policy: &Policy,
    operation: &Operation,
    new: &Volume,
    old: Option<&Volume>,
) -> Decision {
    let subject = Subject::volume(&new.metadata);
    let Some((new_modes, old_modes)) = applicable(operation, new, old) else {
        return Decision::allow();
    };
    let rollback = old.is_some_and(|old| {
        old_modes
            .as_ref()
            .is_some_and(|o| o.is_only(AccessMode::ReadWriteOncePod))
            && new_modes.is_only(AccessMode::ReadWriteOnce)
            && is_recorded_rollback(old, new)
    });
    if rollback {
        let mut decision = decide(policy, subject, &new_modes, None, None);
        decision.audit.insert(
            "rollback".to_owned(),
            "[ReadWriteOncePod] -> [ReadWriteOnce] by a recorded rwop-guard migrate --rollback"
                .to_owned(),
        );
        return decision;
    }
    let from_rwop = old_modes
        .as_ref()
        .is_some_and(|o| o.is_only(AccessMode::ReadWriteOncePod));
    let hint = old.filter(|_| from_rwop).and_then(undo_migration_hint);
    let mut decision = decide(
        policy,
        subject,
        &new_modes,
        old_modes.as_ref(),
        hint.as_deref(),
    );
    if decision.allowed
        && old_modes
            .as_ref()
            .is_some_and(|old| is_rwo_to_rwop(old, &new_modes))
    {
        let warnings = transition_warnings(subject, new);
        if !warnings.is_empty() {
            decision.audit.insert("w1".to_owned(), warnings.join("; "));
            decision.warnings.extend(warnings);
        }
    }
    decision
}

/// V1 and V2 for a PersistentVolumeClaim. (The API server makes a claim's spec immutable, so V2
/// only fires if that ever changes; it costs nothing to keep the rule uniform.)
pub fn validate_claim(
    policy: &Policy,
    operation: &Operation,
    new: &Claim,
    old: Option<&Claim>,
) -> Decision {
    let Some((new_modes, old_modes)) = applicable(operation, new, old) else {
        return Decision::allow();
    };
    decide(
        policy,
        Subject::claim(&new.metadata),
        &new_modes,
        old_modes.as_ref(),
        None,
    )
}

/// The mode sets the rules look at, or None when no rule applies to this operation.
fn applicable<T: HasAccessModes>(
    operation: &Operation,
    new: &T,
    old: Option<&T>,
) -> Option<(AccessModes, Option<AccessModes>)> {
    match operation {
        Operation::Create => Some((new.access_modes(), None)),
        Operation::Update => Some((new.access_modes(), old.map(T::access_modes))),
        Operation::Delete | Operation::Connect => None,
    }
}

/// V1 and V2 on the mode sets; `v2_hint` is added to a V2 message.
fn decide(
    policy: &Policy,
    subject: Subject<'_>,
    new: &AccessModes,
    old: Option<&AccessModes>,
    v2_hint: Option<&str>,
) -> Decision {
    let v2 = old
        .and_then(|old| transition_violation(subject, old, new))
        .map(|mut v| {
            if let Some(hint) = v2_hint {
                v.message = format!("{}; {hint}", v.message);
                v.detail = format!("{}; {hint}", v.detail);
            }
            v
        });
    let violations: Vec<Violation> = exclusive_rwop_violation(subject, new)
        .into_iter()
        .chain(v2)
        .collect();
    let mut decision = Decision::allow();
    if violations.is_empty() {
        return decision;
    }
    let action = policy.validation.action;
    decision
        .audit
        .insert("action".to_owned(), action.as_str().to_owned());
    for v in &violations {
        decision
            .audit
            .insert(v.rule.id().to_lowercase(), v.message.clone());
    }
    let messages = violations.into_iter().map(|v| v.message);
    match action {
        Action::Deny => {
            decision.allowed = false;
            decision.message = Some(messages.collect::<Vec<_>>().join("; "));
        }
        Action::Warn => decision.warnings.extend(messages),
    }
    decision
}

/// W1: an allowed {RWO} -> {RWOP} change is only safe once the claim is released and the volume is
/// retained, and only works for CSI volumes.
fn transition_warnings(subject: Subject<'_>, pv: &Volume) -> Vec<String> {
    let Some(spec) = pv.spec.as_ref() else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") {
        warnings.push(format!(
            "{subject}: reclaim policy is Delete, so deleting its claim to finish the change \
             deletes the volume and its data; set persistentVolumeReclaimPolicy to Retain first"
        ));
    }
    if let Some(claim) = spec.claim_ref.as_ref().filter(|c| c.uid.is_some()) {
        warnings.push(format!(
            "{subject}: still bound to claim \"{}/{}\" (spec.claimRef.uid is set); the claim keeps \
             its old access modes until it is deleted, claimRef.uid is cleared and it is recreated \
             with [ReadWriteOncePod]",
            claim.namespace.as_deref().unwrap_or(""),
            claim.name.as_deref().unwrap_or("")
        ));
    }
    if spec.csi.is_none() {
        warnings.push(format!(
            "{subject}: not a CSI volume; ReadWriteOncePod is only supported for CSI volumes, so \
             pods using it may fail to start"
        ));
    }
    warnings
}
