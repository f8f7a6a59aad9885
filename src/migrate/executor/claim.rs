//! The steps that change the claim: delete it, create it again, wait until it is bound.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, PostParams, Preconditions};

use super::{Ctx, Outcome};
use crate::migrate::access::waits::await_object;
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::state::claim_to_create;
use crate::migrate::model::steps::bound_to;
use crate::policy::HasAccessModes;

impl Ctx<'_> {
    pub(super) async fn delete_claim(&self) -> Outcome {
        let (claim_name, volume) = (&self.claim_name, self.volume);
        let Some(claim) = self.claim().await? else {
            return Ok(Some("the claim is already deleted".to_owned()));
        };
        let bound_elsewhere = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|v| !v.is_empty() && v != volume);
        if bound_elsewhere {
            return Err(MigrateError::Refused(format!(
                "claim {claim_name} now refers to another volume; refusing to delete it"
            )));
        }
        // Never delete a claim while its volume could go with it.
        let pv = self.pv().await?;
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
        if policy != Some("Retain") {
            return Err(MigrateError::Refused(format!(
                "PersistentVolume {volume} has reclaim policy {policy:?}, not Retain; refusing to delete its claim"
            )));
        }
        if claim.metadata.deletion_timestamp.is_none() {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: claim.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.claims.delete(&self.state.claim, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(api_err(format!("cannot delete claim {claim_name}"))(e)),
            }
        }
        let what = format!("claim {claim_name} to be gone");
        let gone = |c: Option<&PersistentVolumeClaim>| c.is_none();
        await_object(&self.claims, &self.state.claim, gone, self.opts, &what).await?;
        Ok(None)
    }

    pub(super) async fn create_claim(&self) -> Outcome {
        let (claim_name, volume) = (&self.claim_name, self.volume);
        let (created, skipped) = match self.claim().await? {
            Some(c) => (c, Some("the claim exists".to_owned())),
            None => {
                let claim = claim_to_create(self.state, volume)?;
                match self.claims.create(&PostParams::default(), &claim).await {
                    Ok(c) => (c, None),
                    Err(kube::Error::Api(s)) if s.is_already_exists() => (
                        self.claims
                            .get(&self.state.claim)
                            .await
                            .map_err(api_err(format!("cannot read claim {claim_name}")))?,
                        None,
                    ),
                    Err(e) => return Err(api_err(format!("cannot create claim {claim_name}"))(e)),
                }
            }
        };
        // A claim with other modes never binds to the volume: say so now rather than time
        // out waiting (a mutating webhook rewrote it, or someone else created it).
        let modes = created.access_modes();
        if !modes.is_only(self.target()) {
            return Err(MigrateError::Refused(format!(
                "claim {claim_name} is {modes}, not [{}], and cannot bind to PersistentVolume {volume}; \
                 a mutating webhook rewrote it, or it was created by someone else: delete it \
                 (the volume is retained) and run the same command again",
                self.state.target
            )));
        }
        Ok(skipped)
    }

    pub(super) async fn wait_bound(&self) -> Outcome {
        let what = format!("claim {} to be Bound to {}", self.claim_name, self.volume);
        let bound = |c: Option<&PersistentVolumeClaim>| c.is_some_and(|c| bound_to(c, self.volume));
        await_object(&self.claims, &self.state.claim, bound, self.opts, &what).await?;
        Ok(None)
    }
}
