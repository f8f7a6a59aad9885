//! Paged listing, as `scan` lists.

use kube::Api;

use crate::migrate::model::error::MigrateError;

/// Every object of `api` (paginated), as `scan` lists them.
pub async fn list_all<K>(api: &Api<K>, resource: &'static str) -> Result<Vec<K>, MigrateError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    crate::scan::list_all(api, resource, &mut |_| {})
        .await
        .map_err(|e| MigrateError::Api {
            what: format!("cannot list {resource}"),
            error: e.error,
        })
}
