//! M2: re-applied manifests keep what rwop-guard changed. A claim M1 mutated, or a claim and
//! volume `migrate` moved, are `[ReadWriteOncePod]` while the manifests they came from still say
//! `[ReadWriteOnce]`. Re-applying them (kubectl's three-way merge, server-side apply, Helm's
//! upgrade) sends `[ReadWriteOnce]` back, which the API server refuses for a claim (its spec is
//! immutable) and V2 refuses for a volume. The mutating webhook answers such an update by
//! keeping `[ReadWriteOncePod]` (and the marker annotation), with a warning that names the
//! object and says its manifest is out of date.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::Resource;
use kube::core::admission::Operation;
use serde_json::Value;

use super::{AccessMode, Decision, HasAccessModes, MIGRATION_ANNOTATION, Subject};
use super::{MUTATED_FROM_ANNOTATION, mutation::MIGRATED_FROM_ANNOTATION};

/// Which marker the old object carries, and what it means for the message.
fn marker(meta: &ObjectMeta) -> Option<(&'static str, &'static str)> {
    let annotations = meta.annotations.as_ref()?;
    let rwo = AccessMode::ReadWriteOnce.as_str();
    [
        (MIGRATED_FROM_ANNOTATION, "rwop-guard migrate moved it"),
        (
            MUTATED_FROM_ANNOTATION,
            "rwop-guard changed it when it was created",
        ),
    ]
    .into_iter()
    .find(|(key, _)| annotations.get(*key).is_some_and(|v| v == rwo))
}

/// M2 for an UPDATE of a claim or a volume. Anything else is allowed unchanged.
pub fn keep_rwop_on_reapply<K: HasAccessModes + Resource>(
    subject: Subject<'_>,
    operation: &Operation,
    new: &K,
    old: Option<&K>,
) -> Decision {
    let Some(old) = old.filter(|_| *operation == Operation::Update) else {
        return Decision::allow();
    };
    let Some((key, how)) = marker(old.meta()) else {
        return Decision::allow_because(
            "not marked as changed by rwop-guard (no mutated-from or migrated-from annotation)",
        );
    };
    // A migration or rollback under way changes the modes itself.
    if old
        .meta()
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIGRATION_ANNOTATION))
    {
        return Decision::allow_because("a rwop-guard migration is in progress on this object");
    }
    let (old_modes, new_modes) = (old.access_modes(), new.access_modes());
    if !old_modes.is_only(AccessMode::ReadWriteOncePod)
        || !new_modes.is_only(AccessMode::ReadWriteOnce)
    {
        return Decision::allow_because(format!(
            "access modes {old_modes} -> {new_modes} are not [ReadWriteOncePod] -> [ReadWriteOnce]"
        ));
    }
    let mut decision = Decision::allow();
    decision.patch = Some(keep_patch(new.meta(), key));
    decision.warnings.push(format!(
        "{subject}: the applied manifest asks for [ReadWriteOnce], but the object is \
         [ReadWriteOncePod] because {how}; kept [ReadWriteOncePod]. Change the manifest to \
         [ReadWriteOncePod] to match (and to silence this warning)"
    ));
    decision.audit.insert(
        "reapply".to_owned(),
        "kept [ReadWriteOncePod] over a re-applied [ReadWriteOnce]".to_owned(),
    );
    decision
}

/// Puts `[ReadWriteOncePod]` back, and the marker if the update dropped it (server-side apply
/// removes annotations the applier owns and no longer sends).
fn keep_patch(new: &ObjectMeta, key: &str) -> Patch {
    let mut ops = vec![PatchOperation::Replace(ReplaceOperation {
        path: PointerBuf::from_tokens(["spec", "accessModes"]),
        value: Value::from(vec![AccessMode::ReadWriteOncePod.as_str()]),
    })];
    let rwo = Value::from(AccessMode::ReadWriteOnce.as_str());
    match new.annotations.as_ref() {
        Some(a) if a.contains_key(key) => {}
        Some(_) => ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", key]),
            value: rwo,
        })),
        None => ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: serde_json::json!({ key: rwo }),
        })),
    }
    Patch(ops)
}
