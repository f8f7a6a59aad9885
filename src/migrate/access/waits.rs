//! Waits, each a watch (never a poll) bounded by the run's timeout.

use std::fmt::Debug;
use std::pin::pin;
use std::sync::Arc;

use futures_util::TryStreamExt;
use kube::runtime::wait::{Condition, await_condition};
use kube::runtime::{reflector, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::migrate::model::error::MigrateError;
use crate::migrate::model::plan::MigrateOptions;

/// Watches object `name` of `api` until `condition` holds (`None`: the object is absent), for at
/// most the run's timeout.
pub async fn await_object<K>(
    api: &Api<K>,
    name: &str,
    condition: impl Condition<K>,
    opts: &MigrateOptions,
    what: &str,
) -> Result<(), MigrateError>
where
    K: Clone + Debug + Send + Sync + DeserializeOwned + Resource<DynamicType = ()> + 'static,
{
    let wait = await_condition(api.clone(), name, condition);
    match tokio::time::timeout(opts.timeout, wait).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::runtime::wait::Error::ProbeFailed(error))) => Err(MigrateError::Watch {
            what: format!("cannot watch for {what}"),
            error,
        }),
        Err(_) => Err(MigrateError::Timeout {
            what: what.to_owned(),
            timeout: opts.timeout,
        }),
    }
}

/// Watches the objects of `api` until `done` holds of all of them (judged on complete lists
/// only, after each change), for at most the run's timeout.
pub async fn await_listed<K>(
    api: &Api<K>,
    opts: &MigrateOptions,
    what: &str,
    done: impl Fn(&[Arc<K>]) -> bool,
) -> Result<(), MigrateError>
where
    K: Clone + Debug + Send + Sync + DeserializeOwned + Resource<DynamicType = ()> + 'static,
{
    let (store, writer) = reflector::store();
    let wait = async {
        let mut events = pin!(reflector(
            writer,
            watcher(api.clone(), watcher::Config::default())
        ));
        while let Some(event) = events.try_next().await? {
            let listing = matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
            if !listing && done(&store.state()) {
                break;
            }
        }
        Ok(())
    };
    match tokio::time::timeout(opts.timeout, wait).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(MigrateError::Watch {
            what: format!("cannot watch for {what}"),
            error,
        }),
        Err(_) => Err(MigrateError::Timeout {
            what: what.to_owned(),
            timeout: opts.timeout,
        }),
    }
}
