//! Mutation M1: new claims asking for [ReadWriteOnce] get [ReadWriteOncePod] where the policy
//! selects them and the cluster facts say it cannot break the claim.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use kube::core::admission::Operation;
use serde_json::Value;

use super::{
    AccessMode, Claim, Decision, Facts, HasAccessModes, Policy, Subject, mutation_would_break,
    selector,
};

/// Set to `"false"` on a claim to keep it as written.
pub const OPT_OUT_ANNOTATION: &str = "rwop-guard.dev/mutate";
/// Recorded on every mutated claim, so the change is visible and reversible.
pub const MUTATED_FROM_ANNOTATION: &str = "rwop-guard.dev/mutated-from";
/// Left by `rwop-guard migrate` on the claim and the volume it moved to ReadWriteOncePod, for
/// good: re-applied `[ReadWriteOnce]` manifests of them keep `[ReadWriteOncePod]` (M2).
pub const MIGRATED_FROM_ANNOTATION: &str = "rwop-guard.dev/migrated-from";

/// M1. `namespace` is the request's namespace (the object may not carry one yet).
/// When nothing is changed, `Decision::explanation` says why, for the log.
pub fn mutate_claim(
    policy: &Policy,
    facts: &Facts,
    operation: &Operation,
    claim: &Claim,
    namespace: Option<&str>,
) -> Decision {
    if *operation != Operation::Create {
        return Decision::allow();
    }
    let ns = namespace
        .or(claim.metadata.namespace.as_deref())
        .unwrap_or("");
    let name = claim.metadata.name.as_deref().unwrap_or("");
    match why_not(policy, facts, claim, namespace) {
        Some(reason) => Decision::allow_because(reason),
        // M1 looks before it leaps: a workload that already mounts the claim must run on it.
        None if let Some(warning) = mutation_would_break(facts, ns, name) => {
            let mut decision = Decision::allow_because(warning.clone());
            decision.warnings.push(warning);
            decision
        }
        None => {
            let mut meta = claim.metadata.clone();
            if meta.namespace.is_none() {
                meta.namespace = namespace.map(str::to_owned);
            }
            let subject = Subject::claim(&meta);
            let class = storage_class(facts, claim).unwrap_or_default();
            let mut decision = Decision::allow();
            decision.patch = Some(rwop_patch(claim));
            decision.warnings.push(format!(
                "{subject}: access modes changed from [ReadWriteOnce] to [ReadWriteOncePod] by \
                 rwop-guard (storage class \"{class}\" supports it), so only one pod can use the \
                 volume at a time; to keep [ReadWriteOnce], annotate the claim \
                 {OPT_OUT_ANNOTATION}=\"false\""
            ));
            decision.audit.insert(
                "mutation".to_owned(),
                "ReadWriteOnce -> ReadWriteOncePod".to_owned(),
            );
            decision
        }
    }
}

/// The first reason not to mutate, or None when every condition of M1 holds.
fn why_not(
    policy: &Policy,
    facts: &Facts,
    claim: &Claim,
    namespace: Option<&str>,
) -> Option<String> {
    let m = &policy.mutation;
    if !m.enabled {
        return Some("mutation is disabled (mutation.enabled: false)".to_owned());
    }
    let spec = claim.spec.as_ref();
    let modes = claim.access_modes();
    if !modes.is_only(AccessMode::ReadWriteOnce) {
        return Some(format!(
            "access modes {modes} are not exactly [ReadWriteOnce]"
        ));
    }
    let namespace = namespace
        .or(claim.metadata.namespace.as_deref())
        .unwrap_or("");
    if m.exclude_namespaces.contains(namespace) {
        return Some(format!(
            "namespace {namespace:?} is in mutation.excludeNamespaces"
        ));
    }
    if !m.namespaces.is_empty() && !m.namespaces.contains(namespace) {
        return Some(format!(
            "namespace {namespace:?} is not in mutation.namespaces"
        ));
    }
    if let Some(sel) = &m.namespace_selector {
        let known = facts
            .cluster
            .as_ref()
            .and_then(|c| c.namespaces.get(namespace))
            .map(|labels| &**labels);
        // Without the namespace's labels (no cluster access, cache not synced), a selector
        // that reads only the name label (an empty one reads none) is still decided.
        let name_only;
        let labels = match known {
            None if selector::reads_only_the_name(sel) => {
                name_only = std::collections::BTreeMap::from([(
                    selector::NAMESPACE_NAME_LABEL.to_owned(),
                    namespace.to_owned(),
                )]);
                Some(&name_only)
            }
            other => other,
        };
        match labels {
            None => {
                return Some(format!(
                    "labels of namespace {namespace:?} are unknown, so mutation.namespaceSelector \
                     cannot be evaluated"
                ));
            }
            Some(labels) if !selector::matches(sel, labels) => {
                return Some(format!(
                    "namespace {namespace:?} does not match mutation.namespaceSelector"
                ));
            }
            Some(_) => {}
        }
    }
    let opted_out = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPT_OUT_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if opted_out {
        return Some(format!(
            "the claim opts out ({OPT_OUT_ANNOTATION}: \"false\")"
        ));
    }
    let selector = spec.and_then(|s| s.selector.as_ref());
    if selector.is_some_and(|s| s.match_labels.is_some() || s.match_expressions.is_some()) {
        return Some(
            "spec.selector is set: the claim binds to a pre-existing volume whose modes are not known"
                .to_owned(),
        );
    }
    if let Some(volume) = spec
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty())
    {
        let pv_modes = facts.cluster.as_ref().and_then(|c| c.volumes.get(volume));
        return match pv_modes {
            Some(modes) if modes.contains(AccessMode::ReadWriteOncePod) => None,
            Some(modes) => Some(format!(
                "spec.volumeName names PersistentVolume {volume:?} with modes {modes}, which do not \
                 offer ReadWriteOncePod"
            )),
            None => Some(format!(
                "spec.volumeName names PersistentVolume {volume:?} whose modes are unknown"
            )),
        };
    }
    let class = match storage_class(facts, claim) {
        Ok(class) => class,
        Err(reason) => return Some(reason),
    };
    class_supports_rwop(policy, facts, &class).err()
}

/// The class the claim will be provisioned from: explicit, or the cluster default.
fn storage_class(facts: &Facts, claim: &Claim) -> Result<String, String> {
    match claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    {
        Some("") => Err(
            "storageClassName is \"\" (no dynamic provisioning; binds to a static volume)".to_owned(),
        ),
        Some(class) => Ok(class.to_owned()),
        None => match facts.cluster.as_ref() {
            None => Err(
                "storageClassName is not set and the cluster default class is unknown (no cluster facts)"
                    .to_owned(),
            ),
            Some(c) => c
                .default_storage_class
                .clone()
                .ok_or_else(|| "storageClassName is not set and the cluster has no default class".to_owned()),
        },
    }
}

/// Whether claims of `class` can use ReadWriteOncePod: listed in `mutation.storageClasses`, or
/// known to the cluster with a CSI provisioner (subject to `mutation.provisioners`). Err says why not.
pub fn class_supports_rwop(policy: &Policy, facts: &Facts, class: &str) -> Result<(), String> {
    let provisioners = &policy.mutation.provisioners;
    let listed = policy.mutation.storage_classes.contains(class);
    let known = facts
        .cluster
        .as_ref()
        .and_then(|c| c.storage_classes.get(class));
    match known {
        Some(sc) if provisioners.deny.contains(&sc.provisioner) => Err(format!(
            "storage class {class:?} uses provisioner {:?}, which is in mutation.provisioners.deny",
            sc.provisioner
        )),
        Some(sc) if provisioners.allow.contains(&sc.provisioner) || sc.is_csi() => Ok(()),
        Some(sc) => Err(format!(
            "storage class {class:?} uses the in-tree provisioner {:?}, not a CSI driver; \
             ReadWriteOncePod needs CSI (add it to mutation.provisioners.allow if it is served by \
             CSI migration)",
            sc.provisioner
        )),
        None if listed => Ok(()),
        None if facts.cluster.is_some() => Err(format!(
            "storage class {class:?} does not exist in the cluster and is not in mutation.storageClasses"
        )),
        None => Err(format!(
            "storage class {class:?} is not in mutation.storageClasses and there are no cluster facts"
        )),
    }
}

/// Replaces the modes and records the original ones in an annotation.
fn rwop_patch(claim: &Claim) -> Patch {
    let replace = PatchOperation::Replace(ReplaceOperation {
        path: PointerBuf::from_tokens(["spec", "accessModes"]),
        value: Value::from(vec![AccessMode::ReadWriteOncePod.as_str()]),
    });
    let annotate = if claim.metadata.annotations.is_some() {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", MUTATED_FROM_ANNOTATION]),
            value: Value::from(AccessMode::ReadWriteOnce.as_str()),
        })
    } else {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: serde_json::json!({ MUTATED_FROM_ANNOTATION: AccessMode::ReadWriteOnce.as_str() }),
        })
    };
    Patch(vec![replace, annotate])
}
