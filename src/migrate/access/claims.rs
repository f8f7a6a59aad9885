//! Finding claims and their volumes: the volume of a claim (through the state recorded on a
//! volume when the claim is gone mid-migration), and the claims of a namespace.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::ListParams;
use kube::{Api, Client};

use super::list::list_all;
use crate::migrate::model::eligibility::not_bound_message;
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::state::MigrationState;

/// Where the migration stands, found from the claim's name.
pub struct Located {
    pub volume: PersistentVolume,
    pub claim: Option<PersistentVolumeClaim>,
    pub state: Option<MigrationState>,
}

/// Finds the volume of `namespace/claim`: through the claim's `volumeName`, or, when the claim is
/// gone mid-migration, through the state recorded on a volume.
pub async fn locate(
    client: &Client,
    namespace: &str,
    claim: &str,
) -> Result<Located, MigrateError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let found = claims
        .get_opt(claim)
        .await
        .map_err(api_err(format!("cannot read claim {namespace}/{claim}")))?;
    if let Some(pvc) = &found
        && let Some(name) = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|n| !n.is_empty())
        && let Some(pv) = volumes
            .get_opt(name)
            .await
            .map_err(api_err(format!("cannot read PersistentVolume {name}")))?
    {
        let state = MigrationState::read(&pv)?;
        return Ok(Located {
            volume: pv,
            claim: found,
            state,
        });
    }
    // The claim is gone (or not bound): look for a volume whose recorded state names it.
    for pv in list_all(&volumes, "persistentvolumes").await? {
        if let Some(state) = MigrationState::read(&pv)?
            && state.namespace == namespace
            && state.claim == claim
        {
            return Ok(Located {
                volume: pv,
                claim: found,
                state: Some(state),
            });
        }
    }
    match found {
        Some(pvc) => {
            let named = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .filter(|n| !n.is_empty());
            Err(MigrateError::Refused(not_bound_message(
                &format!("{namespace}/{claim}"),
                named,
            )))
        }
        None => Err(MigrateError::Refused(format!(
            "claim {namespace}/{claim} not found, and no PersistentVolume records a migration of it"
        ))),
    }
}

/// The claims of `namespace` (those matching `selector`, if given), plus every claim of the
/// namespace whose migration is recorded on a volume and that is gone (deleted mid-migration:
/// it is resumed, or rolled back). Without a selector, every recorded claim is one of them anyway;
/// with one, a recorded claim that exists and does not match stays out.
pub async fn claims_of(
    client: &Client,
    namespace: &str,
    selector: Option<&str>,
) -> Result<Vec<String>, MigrateError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let mut params = ListParams::default();
    if let Some(s) = selector {
        params = params.labels(s);
    }
    let mut names = BTreeSet::new();
    let mut continue_token: Option<String> = None;
    loop {
        let mut page = params.clone().limit(500);
        if let Some(token) = &continue_token {
            page = page.continue_token(token);
        }
        let list = claims.list(&page).await.map_err(api_err(format!(
            "cannot list claims of namespace {namespace}"
        )))?;
        names.extend(list.items.into_iter().filter_map(|c| c.metadata.name));
        continue_token = list.metadata.continue_.filter(|t| !t.is_empty());
        if continue_token.is_none() {
            break;
        }
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for pv in list_all(&volumes, "persistentvolumes").await? {
        let Some(state) = MigrationState::read(&pv)? else {
            continue;
        };
        if state.namespace != namespace || names.contains(&state.claim) {
            continue;
        }
        let take = selector.is_none()
            || claims
                .get_opt(&state.claim)
                .await
                .map_err(api_err(format!(
                    "cannot read claim {namespace}/{}",
                    state.claim
                )))?
                .is_none();
        if take {
            names.insert(state.claim);
        }
    }
    Ok(names.into_iter().collect())
}
