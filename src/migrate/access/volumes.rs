//! Writes to the PersistentVolume: read, change, replace with its resourceVersion as
//! precondition, retried on conflicts; the migration state is one such write.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::PostParams;

use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::state::MigrationState;
use crate::policy::MIGRATION_ANNOTATION;

const CONFLICT_RETRIES: u64 = 10;

/// Reads, changes and replaces a volume with its resourceVersion as precondition; retries on
/// conflicts. `change` returns whether it changed anything (nothing is written otherwise); so
/// does the result.
pub async fn update_volume(
    volumes: &Api<PersistentVolume>,
    name: &str,
    what: &str,
    mut change: impl FnMut(&mut PersistentVolume) -> bool,
) -> Result<bool, MigrateError> {
    let mut attempts = 0;
    loop {
        let mut pv = volumes.get(name).await.map_err(api_err(format!(
            "cannot read PersistentVolume {name} to {what}"
        )))?;
        if !change(&mut pv) {
            return Ok(false);
        }
        match volumes.replace(name, &PostParams::default(), &pv).await {
            Ok(_) => return Ok(true),
            // Someone else wrote in between: read again and re-apply the change.
            Err(kube::Error::Api(status))
                if status.is_conflict() && attempts < CONFLICT_RETRIES =>
            {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempts)).await;
            }
            Err(e) => {
                return Err(api_err(format!(
                    "cannot update PersistentVolume {name} to {what}"
                ))(e));
            }
        }
    }
}

/// Writes `state` into the volume's annotation (with the volume's resourceVersion as precondition,
/// retried on conflicts).
pub async fn record(
    volumes: &Api<PersistentVolume>,
    name: &str,
    state: Option<&MigrationState>,
) -> Result<(), MigrateError> {
    let text = match state {
        Some(s) => {
            Some(serde_json::to_string(s).map_err(|e| MigrateError::Refused(e.to_string()))?)
        }
        None => None,
    };
    update_volume(volumes, name, "record the migration state", |pv| {
        let annotations = pv.metadata.annotations.get_or_insert_with(Default::default);
        match &text {
            Some(t) => {
                annotations
                    .insert(MIGRATION_ANNOTATION.to_owned(), t.clone())
                    .as_ref()
                    != Some(t)
            }
            None => annotations.remove(MIGRATION_ANNOTATION).is_some(),
        }
    })
    .await?;
    Ok(())
}
