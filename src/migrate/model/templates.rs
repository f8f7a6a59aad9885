//! Which pods and templates mount a claim, and which claims a StatefulSet makes. Pure: read from
//! objects the caller holds.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;

use crate::policy::{AccessMode, HasAccessModes};

/// Whether every `volumeClaimTemplates` entry asks for exactly `[mode]` (none: false).
pub fn templates_are(sts: &StatefulSet, mode: AccessMode) -> bool {
    let templates = sts.spec.volume_claim_templates.as_ref();
    templates.is_some_and(|t| !t.is_empty() && t.iter().all(|t| t.access_modes().is_only(mode)))
}

/// The template names of `sts`.
pub fn template_names(sts: &StatefulSet) -> Vec<String> {
    let templates = sts.spec.volume_claim_templates.as_ref();
    templates
        .into_iter()
        .flatten()
        .filter_map(|t| t.metadata.name.clone())
        .collect()
}

/// The ordinal of `claim` if it is one of the claims `sts` makes (TEMPLATE-NAME-ORDINAL).
pub fn ordinal_of(sts: &StatefulSet, claim: &str) -> Option<u32> {
    let name = sts.metadata.name.as_deref()?;
    template_names(sts).iter().find_map(|t| {
        let rest = claim.strip_prefix(t.as_str())?.strip_prefix('-')?;
        let digits = rest.strip_prefix(name)?.strip_prefix('-')?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    })
}

/// Whether a pod that has not finished mounts `claim`.
pub fn mounts(pod: &Pod, claim: &str) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !finished
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vols| {
                vols.iter().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
            })
}

/// Whether a Deployment's pod template mounts `claim`.
pub fn template_mounts(d: &Deployment, claim: &str) -> bool {
    d.spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.volumes.as_ref())
        .is_some_and(|vols| {
            vols.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim)
            })
        })
}
