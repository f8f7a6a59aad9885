//! The steps that change the PersistentVolume: its reclaim policy, its claimRef, its modes.

use super::{Ctx, Outcome};
use crate::migrate::access::volumes::update_volume;
use crate::policy::{AccessMode, HasAccessModes, MIGRATED_FROM_ANNOTATION};

impl Ctx<'_> {
    pub(super) async fn release_volume(&self) -> Outcome {
        let live_claim_uid = self.claim().await?.and_then(|c| c.metadata.uid);
        let changed = update_volume(&self.volumes, self.volume, "clear claimRef.uid", |pv| {
            let Some(claim_ref) = pv.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) else {
                return false;
            };
            let stale = claim_ref.uid.is_some() && claim_ref.uid != live_claim_uid;
            if stale {
                claim_ref.uid = None;
                claim_ref.resource_version = None;
            }
            stale
        })
        .await?;
        Ok((!changed).then(|| "the volume is not bound to a deleted claim".to_owned()))
    }

    pub(super) async fn set_volume_modes(&self) -> Outcome {
        let target = self.target();
        // The marker goes in the same update as the modes: a volume is never [ReadWriteOncePod]
        // by migrate's hand without it, nor [ReadWriteOnce] again with it.
        let changed = update_volume(&self.volumes, self.volume, "set its access modes", |pv| {
            let modes_ok = pv.access_modes().is_only(target);
            let spec = pv.spec.get_or_insert_with(Default::default);
            spec.access_modes = Some(vec![target.as_str().to_owned()]);
            let annotations = pv.metadata.annotations.get_or_insert_with(Default::default);
            let marker_ok = if target == AccessMode::ReadWriteOnce {
                annotations.remove(MIGRATED_FROM_ANNOTATION).is_none()
            } else {
                let rwo = AccessMode::ReadWriteOnce.as_str();
                annotations
                    .insert(MIGRATED_FROM_ANNOTATION.to_owned(), rwo.to_owned())
                    .is_some_and(|v| v == rwo)
            };
            !(modes_ok && marker_ok)
        })
        .await?;
        Ok((!changed).then(|| format!("the volume is already [{}]", self.state.target)))
    }

    pub(super) async fn set_reclaim_policy(&self, policy: &str) -> Outcome {
        let what = format!("set its reclaim policy to {policy}");
        let changed = update_volume(&self.volumes, self.volume, &what, |pv| {
            let spec = pv.spec.get_or_insert_with(Default::default);
            if spec.persistent_volume_reclaim_policy.as_deref() == Some(policy) {
                return false;
            }
            spec.persistent_volume_reclaim_policy = Some(policy.to_owned());
            true
        })
        .await?;
        Ok((!changed).then(|| format!("reclaim policy is already {policy}")))
    }
}
