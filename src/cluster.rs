//! Watch caches of StorageClasses, PersistentVolumes (modes only) and Namespaces (labels), turned
//! into the [`Facts`] snapshot the policy reads. Requests never call the API: they read the last
//! snapshot. A broken watch keeps its last state, is retried with backoff, logged and counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::policy::{AccessModes, ClusterFacts, Facts, StorageClassFacts};
use crate::server::AppState;
use crate::server::metrics::ResourceLabel;

const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// What is kept of a StorageClass.
#[derive(Clone, Debug)]
struct ClassEntry {
    facts: StorageClassFacts,
    is_default: bool,
    created: Option<Time>,
}

#[derive(Default)]
struct Caches {
    classes: HashMap<String, ClassEntry>,
    volumes: HashMap<String, AccessModes>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    synced: [bool; 3],
}

impl Caches {
    fn all_synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// The cluster default class: the newest class marked default (as the API server picks it).
    fn default_class(&self) -> Option<String> {
        self.classes
            .iter()
            .filter(|(_, c)| c.is_default)
            .max_by(|(an, a), (bn, b)| {
                a.created
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.created.as_ref().map(|t| t.0))
                    .then_with(|| bn.cmp(an))
            })
            .map(|(name, _)| name.clone())
    }

    fn snapshot(&self) -> Facts {
        Facts {
            cluster: Some(ClusterFacts {
                storage_classes: self
                    .classes
                    .iter()
                    .map(|(n, c)| (n.clone(), c.facts.clone()))
                    .collect(),
                default_storage_class: self.default_class(),
                volumes: self.volumes.clone(),
                namespaces: self.namespaces.clone(),
            }),
        }
    }
}

/// A watched resource: how it is named in metrics and logs, and what is kept of each object.
trait Cached:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    type Value: Send;
    const RESOURCE: &'static str;
    const INDEX: usize;
    fn value(&self) -> Self::Value;
    fn map(caches: &mut Caches) -> &mut HashMap<String, Self::Value>;
}

impl Cached for StorageClass {
    type Value = ClassEntry;
    const RESOURCE: &'static str = "storageclasses";
    const INDEX: usize = 0;
    fn value(&self) -> ClassEntry {
        let annotations = self.metadata.annotations.as_ref();
        let is_default = DEFAULT_CLASS_ANNOTATIONS.iter().any(|k| {
            annotations
                .and_then(|a| a.get(*k))
                .is_some_and(|v| v == "true")
        });
        ClassEntry {
            facts: StorageClassFacts {
                provisioner: self.provisioner.clone(),
            },
            is_default,
            created: self.metadata.creation_timestamp.clone(),
        }
    }
    fn map(caches: &mut Caches) -> &mut HashMap<String, ClassEntry> {
        &mut caches.classes
    }
}

impl Cached for PersistentVolume {
    type Value = AccessModes;
    const RESOURCE: &'static str = "persistentvolumes";
    const INDEX: usize = 1;
    fn value(&self) -> AccessModes {
        AccessModes::from_optional(self.spec.as_ref().and_then(|s| s.access_modes.as_ref()))
    }
    fn map(caches: &mut Caches) -> &mut HashMap<String, AccessModes> {
        &mut caches.volumes
    }
}

impl Cached for Namespace {
    type Value = BTreeMap<String, String>;
    const RESOURCE: &'static str = "namespaces";
    const INDEX: usize = 2;
    fn value(&self) -> BTreeMap<String, String> {
        self.metadata.labels.clone().unwrap_or_default()
    }
    fn map(caches: &mut Caches) -> &mut HashMap<String, BTreeMap<String, String>> {
        &mut caches.namespaces
    }
}

/// The running watches; they stop when this is dropped.
pub struct ClusterWatch {
    tasks: Vec<JoinHandle<()>>,
    published: watch::Receiver<u64>,
}

impl ClusterWatch {
    /// Counts published snapshots: await `changed()` to see the next one (tests, diagnostics).
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.clone()
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the three watches. Until all have listed once, `state.facts_ready` is false (so
/// `/readyz` fails) and the facts stay unknown (so nothing is mutated).
pub fn start(client: Client, state: Arc<AppState>) -> ClusterWatch {
    state.facts_ready.store(false, Ordering::SeqCst);
    let caches = Arc::new(Mutex::new(Caches::default()));
    let (tx, published) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let tasks = vec![
        tokio::spawn(run::<StorageClass>(
            Api::all(client.clone()),
            caches.clone(),
            state.clone(),
            tx.clone(),
        )),
        tokio::spawn(run::<PersistentVolume>(
            Api::all(client.clone()),
            caches.clone(),
            state.clone(),
            tx.clone(),
        )),
        tokio::spawn(run::<Namespace>(Api::all(client), caches, state, tx)),
    ];
    ClusterWatch { tasks, published }
}

async fn run<K: Cached>(
    api: Api<K>,
    caches: Arc<Mutex<Caches>>,
    state: Arc<AppState>,
    published: Arc<watch::Sender<u64>>,
) {
    let label = ResourceLabel {
        resource: K::RESOURCE,
    };
    let synced_gauge = state.metrics.cache_synced.get_or_create_owned(&label);
    let errors = state.metrics.watch_errors.get_or_create_owned(&label);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Objects of a relist, swapped in whole at InitDone so readers never see half a list.
    let mut relist: Option<HashMap<String, K::Value>> = None;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                errors.inc();
                synced_gauge.set(0);
                tracing::warn!(
                    resource = K::RESOURCE,
                    "watch failed, serving the last known state and retrying: {e}"
                );
                continue;
            }
        };
        let mut c = caches.lock().await;
        match event {
            watcher::Event::Init => {
                relist = Some(HashMap::new());
                continue;
            }
            watcher::Event::InitApply(obj) => {
                if let (Some(buffer), Some(name)) = (relist.as_mut(), obj.meta().name.clone()) {
                    buffer.insert(name, obj.value());
                }
                continue;
            }
            watcher::Event::InitDone => {
                *K::map(&mut c) = relist.take().unwrap_or_default();
                if !c.synced[K::INDEX] {
                    tracing::info!(
                        resource = K::RESOURCE,
                        count = K::map(&mut c).len(),
                        "cache synced"
                    );
                }
                c.synced[K::INDEX] = true;
            }
            watcher::Event::Apply(obj) => {
                if let Some(name) = obj.meta().name.clone() {
                    K::map(&mut c).insert(name, obj.value());
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(name) = obj.meta().name.as_ref() {
                    K::map(&mut c).remove(name);
                }
            }
        }
        synced_gauge.set(1);
        if c.all_synced() {
            state.facts.store(Arc::new(c.snapshot()));
            if !state.facts_ready.swap(true, Ordering::SeqCst) {
                tracing::info!("all cluster caches synced; ready");
            }
            published.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn class(name: &str, default: bool, created: i64) -> (String, ClassEntry) {
        (
            name.to_owned(),
            ClassEntry {
                facts: StorageClassFacts {
                    provisioner: "x.csi".to_owned(),
                },
                is_default: default,
                created: Some(Time(Timestamp::from_second(created).unwrap())),
            },
        )
    }

    #[test]
    fn newest_default_class_wins() {
        let mut c = Caches::default();
        assert_eq!(c.default_class(), None);
        c.classes.extend([
            class("a", true, 100),
            class("b", true, 200),
            class("c", false, 300),
        ]);
        assert_eq!(c.default_class().as_deref(), Some("b"));
        c.classes.extend([class("a2", true, 200)]);
        // Same age: the first by name, deterministically.
        assert_eq!(c.default_class().as_deref(), Some("a2"));
    }
}
