//! Watch caches of StorageClasses, PersistentVolumes (modes only) and Namespaces (labels only),
//! published as [`Facts`] snapshots on a `tokio::sync::watch` channel. Requests never call the
//! API: they read the last snapshot. A broken watch keeps its last state, is retried with
//! backoff, logged and counted.
//!
//! Cost: the caches are persistent maps (`imbl`, structural sharing), so an event updates one
//! entry in O(log n) and a snapshot is three pointer copies: an event costs the same at 100 or
//! 100,000 volumes (the whole-map copy per event this replaced was 3.3 ms at 50,000). An event
//! that changes nothing a rule reads (a PV's status, a namespace's annotations) publishes
//! nothing. Memory: a name and what a rule reads per object; lists are read in pages, and a
//! relist buffers values, never objects (BENCHMARKS.md, "Cluster caches").
//!
//! This module knows nothing of the server: it publishes facts and its own metrics, and the
//! server reads them (`server::AppState::with_cluster`). Readiness is derived from the facts in
//! one place: they stay unknown (`cluster: None`) until every cache has listed once.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::migrate::model::workloads::{WorkloadInfo, WorkloadKind, WorkloadView};
use crate::policy::{AccessModes, ByName, ClusterFacts, Facts, Labels, StorageClassFacts};

const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// Objects per list page: what a (re)list holds in full objects at once. kube's default, kept
/// explicit because the memory bound depends on it (500 PVs ≈ 1 MiB of JSON).
pub const PAGE_SIZE: u32 = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: &'static str,
}

/// The caches' metrics, registered by whoever exposes them (the server's registry).
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    pub synced: Family<ResourceLabel, Gauge>,
    pub errors: Family<ResourceLabel, Counter>,
    pub objects: Family<ResourceLabel, Gauge>,
    pub events: Family<ResourceLabel, Counter>,
}

impl CacheMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cache_synced",
            "1 when the watch cache of a resource is in sync with the API server",
            self.synced.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of the watch on a resource (the cache keeps serving its last state)",
            self.errors.clone(),
        );
        registry.register(
            "cache_objects",
            "Objects in the watch cache of a resource (its memory grows with this)",
            self.objects.clone(),
        );
        registry.register(
            "watch_events",
            "Watch events applied to the cache of a resource (list items included); the \
             published facts include every counted event",
            self.events.clone(),
        );
    }
}

/// What a rule reads of a StorageClass, and what picks the cluster default.
#[derive(Clone, Debug, PartialEq)]
struct ClassEntry {
    facts: StorageClassFacts,
    is_default: bool,
    created: Option<Timestamp>,
}

/// A watched resource: how it is named in metrics and logs, and what is kept of each object.
trait Cached {
    type Value: Clone + PartialEq;
    const RESOURCE: &'static str;
    fn value(&self) -> Self::Value;
    /// The cache key: the name, or `namespace/name` for a namespaced resource.
    fn key(&self) -> Option<Cow<'_, str>>;
    /// Whether the cache keeps this value (a workload that mounts no claim is not kept).
    fn wanted(_value: &Self::Value) -> bool {
        true
    }
}

fn namespaced_key(meta: &ObjectMeta) -> Option<Cow<'_, str>> {
    let name = meta.name.as_deref()?;
    let ns = meta.namespace.as_deref().unwrap_or_default();
    Some(Cow::Owned(format!("{ns}/{name}")))
}

impl Cached for StorageClass {
    type Value = ClassEntry;
    const RESOURCE: &'static str = "storageclasses";
    fn key(&self) -> Option<Cow<'_, str>> {
        self.metadata.name.as_deref().map(Cow::Borrowed)
    }
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
            created: self.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// What is read of a PersistentVolume: its name and resourceVersion (for the watch) and its
/// modes. The rest of each object is skipped by the parser, never allocated: measured at
/// 100,000 volumes, the full `k8s_openapi` type cost 21 µs of CPU per listed volume and most of
/// the peak memory of a list (BENCHMARKS.md, "Cluster caches").
#[derive(Clone, Debug, Deserialize)]
struct VolumeModes {
    #[serde(deserialize_with = "name_and_version")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: VolumeModesSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct VolumeModesSpec {
    #[serde(rename = "accessModes", default)]
    access_modes: Option<Vec<String>>,
}

fn name_and_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    struct Meta {
        name: Option<String>,
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
    }
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
}

crate::policy::resource_as!(VolumeModes, PersistentVolume);

impl Cached for VolumeModes {
    type Value = AccessModes;
    const RESOURCE: &'static str = "persistentvolumes";
    fn key(&self) -> Option<Cow<'_, str>> {
        self.metadata.name.as_deref().map(Cow::Borrowed)
    }
    fn value(&self) -> AccessModes {
        AccessModes::from_optional(self.spec.access_modes.as_ref())
    }
}

impl Cached for PartialObjectMeta<Namespace> {
    type Value = Arc<Labels>;
    const RESOURCE: &'static str = "namespaces";
    fn key(&self) -> Option<Cow<'_, str>> {
        self.metadata.name.as_deref().map(Cow::Borrowed)
    }
    fn value(&self) -> Arc<Labels> {
        Arc::new(self.metadata.labels.clone().unwrap_or_default())
    }
}

/// What is read of a PersistentVolumeClaim: namespace, name, resourceVersion and its modes
/// (rule W2 asks whether a workload's claims are ReadWriteOncePod), the rest skipped unparsed.
#[derive(Clone, Debug, Deserialize)]
struct ClaimModes {
    #[serde(deserialize_with = "namespaced_name_and_version")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: VolumeModesSpec,
}

fn namespaced_name_and_version<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
    }
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
}

crate::policy::resource_as!(ClaimModes, PersistentVolumeClaim);

impl Cached for ClaimModes {
    type Value = AccessModes;
    const RESOURCE: &'static str = "persistentvolumeclaims";
    fn value(&self) -> AccessModes {
        AccessModes::from_optional(self.spec.access_modes.as_ref())
    }
    fn key(&self) -> Option<Cow<'_, str>> {
        namespaced_key(&self.metadata)
    }
}

/// The workload kinds whose pod templates W2 and M1 look at, in the order of
/// [`ClusterFacts::workloads`]. Pods are not watched: a bare pod has no template to roll, and
/// watching every pod would cost an event per pod start.
trait WorkloadResource: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + 'static {
    const RESOURCE: &'static str;
    const KIND: WorkloadKind;
    const INDEX: usize;
}

macro_rules! workload_resource {
    ($($kind:ident $plural:literal $index:literal),* $(,)?) => {
        $(impl WorkloadResource for $kind {
            const RESOURCE: &'static str = $plural;
            const KIND: WorkloadKind = WorkloadKind::$kind;
            const INDEX: usize = $index;
        })*
        /// The workload resources' names, by index.
        const WORKLOAD_RESOURCES: [&str; WORKLOAD_KINDS] = [$($plural),*];
    };
}

/// How many workload kinds are watched.
const WORKLOAD_KINDS: usize = 6;

workload_resource!(
    Deployment "deployments" 0,
    StatefulSet "statefulsets" 1,
    DaemonSet "daemonsets" 2,
    ReplicaSet "replicasets" 3,
    Job "jobs" 4,
    CronJob "cronjobs" 5,
);

/// A watched workload of any kind, as the cache keeps it: `namespace/name` and what the
/// judgement reads.
#[derive(Clone, Debug)]
struct WorkloadEntry {
    key: Option<String>,
    value: Arc<WorkloadInfo>,
}

impl WorkloadEntry {
    fn of<K: WorkloadResource>(view: WorkloadView<K>) -> WorkloadEntry {
        WorkloadEntry {
            key: namespaced_key(&view.metadata).map(Cow::into_owned),
            value: Arc::new(view.info(K::KIND)),
        }
    }
}

impl Cached for WorkloadEntry {
    type Value = Arc<WorkloadInfo>;
    const RESOURCE: &'static str = "workloads";
    fn value(&self) -> Arc<WorkloadInfo> {
        self.value.clone()
    }
    fn key(&self) -> Option<Cow<'_, str>> {
        self.key.as_deref().map(Cow::Borrowed)
    }
    /// Only workloads that mount a claim, and not a Deployment's ReplicaSets or a CronJob's
    /// Jobs (they run their owner's template): most workloads mount none.
    fn wanted(value: &Arc<WorkloadInfo>) -> bool {
        !value.claims.is_empty() && !crate::policy::runs_a_controllers_template(value)
    }
}

/// A workload watch's event, for the cache of its kind.
fn workload_update<K: WorkloadResource>(event: watcher::Event<WorkloadView<K>>) -> Update {
    let event = match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(WorkloadEntry::of(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(o) => watcher::Event::Apply(WorkloadEntry::of(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(WorkloadEntry::of(o)),
    };
    Update::Workload(K::INDEX, event)
}

/// One resource's cache: object name -> what a rule reads of it.
#[derive(Clone, Debug)]
struct Cache<V: Clone> {
    map: ByName<V>,
    /// Values of a relist in progress, swapped in whole at its end so readers never see half
    /// a list. Keys are shared with `map` where the name is already known.
    relist: Option<ByName<V>>,
    synced: bool,
}

impl<V: Clone> Default for Cache<V> {
    fn default() -> Self {
        Self {
            map: ByName::default(),
            relist: None,
            synced: false,
        }
    }
}

impl<V: Clone + PartialEq> Cache<V> {
    /// Applies one watcher event; true when what a rule reads changed.
    fn apply<K: Cached<Value = V>>(&mut self, event: watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(ByName::default());
                false
            }
            watcher::Event::InitApply(obj) => {
                let value = obj.value();
                if let (Some(name), Some(buffer), true) =
                    (obj.key(), &mut self.relist, K::wanted(&value))
                {
                    let key = match self.map.get_key_value(&*name) {
                        Some((key, _)) => key.clone(),
                        None => Arc::from(name),
                    };
                    buffer.insert(key, value);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relist.take() {
                    self.map = listed;
                }
                self.synced = true;
                true
            }
            watcher::Event::Apply(obj) => {
                let Some(name) = obj.key() else {
                    return false;
                };
                let value = obj.value();
                if !K::wanted(&value) {
                    return self.map.remove(&*name).is_some();
                }
                if self.map.get(&*name) == Some(&value) {
                    return false;
                }
                match self.map.get_mut(&*name) {
                    Some(slot) => *slot = value,
                    None => {
                        self.map.insert(Arc::from(name), value);
                    }
                }
                true
            }
            watcher::Event::Delete(obj) => obj
                .key()
                .is_some_and(|name| self.map.remove(&*name).is_some()),
        }
    }
}

/// The three caches and the facts made of them.
#[derive(Clone, Debug, Default)]
struct Caches {
    classes: Cache<ClassEntry>,
    /// Derived from `classes` when it changes (a hundred entries, rarely written).
    class_facts: imbl::OrdMap<String, StorageClassFacts>,
    default_class: Option<String>,
    volumes: Cache<AccessModes>,
    namespaces: Cache<Arc<Labels>>,
    claims: Cache<AccessModes>,
    /// One per kind of [`WORKLOAD_RESOURCES`].
    workloads: [Cache<Arc<WorkloadInfo>>; WORKLOAD_KINDS],
}

/// One event of one of the watches.
enum Update {
    Class(watcher::Event<StorageClass>),
    Volume(watcher::Event<VolumeModes>),
    Namespace(watcher::Event<PartialObjectMeta<Namespace>>),
    Claim(watcher::Event<ClaimModes>),
    /// The index of the kind in [`WORKLOAD_RESOURCES`].
    Workload(usize, watcher::Event<WorkloadEntry>),
}

impl Caches {
    fn all_synced(&self) -> bool {
        self.classes.synced
            && self.volumes.synced
            && self.namespaces.synced
            && self.claims.synced
            && self.workloads.iter().all(|w| w.synced)
    }

    /// Applies one event; true when the facts changed.
    fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Class(e) => {
                let changed = self.classes.apply(e);
                if changed {
                    self.class_facts = self
                        .classes
                        .map
                        .iter()
                        .map(|(n, c)| (n.to_string(), c.facts.clone()))
                        .collect();
                    self.default_class = default_class(&self.classes.map);
                }
                changed
            }
            Update::Volume(e) => self.volumes.apply(e),
            Update::Namespace(e) => self.namespaces.apply(e),
            Update::Claim(e) => self.claims.apply(e),
            Update::Workload(kind, e) => self.workloads[kind].apply(e),
        }
    }

    /// The facts: unknown until every cache has synced; then O(1) (shared maps).
    fn facts(&self) -> Facts {
        if !self.all_synced() {
            return Facts::default();
        }
        Facts {
            cluster: Some(ClusterFacts {
                storage_classes: self.class_facts.clone(),
                default_storage_class: self.default_class.clone(),
                volumes: self.volumes.map.clone(),
                namespaces: self.namespaces.map.clone(),
                claims: self.claims.map.clone(),
                workloads: self.workloads.iter().map(|w| w.map.clone()).collect(),
            }),
        }
    }
}

/// The cluster default class: the newest class marked default (as the API server picks it),
/// the first by name among equals.
fn default_class(classes: &ByName<ClassEntry>) -> Option<String> {
    classes
        .iter()
        .filter(|(_, c)| c.is_default)
        .max_by(|(an, a), (bn, b)| a.created.cmp(&b.created).then_with(|| bn.cmp(an)))
        .map(|(name, _)| name.to_string())
}

/// The running watches; they stop when this is dropped.
pub struct ClusterWatch {
    task: JoinHandle<()>,
    feed: Feed,
}

/// What the caches publish: the facts (unknown until synced) and their metrics.
#[derive(Clone, Debug)]
pub struct Feed {
    pub facts: watch::Receiver<Arc<Facts>>,
    pub metrics: CacheMetrics,
}

impl ClusterWatch {
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the three watches. Until all have listed once the published facts are unknown (so
/// nothing is mutated, and a server reading them is not ready).
pub fn start(client: Client) -> ClusterWatch {
    let metrics = CacheMetrics::default();
    let (tx, facts) = watch::channel(Arc::new(Facts::default()));
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let classes = watcher(Api::<StorageClass>::all(client.clone()), config.clone());
    let volumes = watcher(Api::<VolumeModes>::all(client.clone()), config.clone());
    // Labels are all a rule reads of a namespace: its metadata is enough.
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        config.clone(),
    );
    let claims = watcher(Api::<ClaimModes>::all(client.clone()), config.clone());
    let streams = vec![
        resource_stream(classes, StorageClass::RESOURCE, Update::Class, &metrics),
        resource_stream(volumes, VolumeModes::RESOURCE, Update::Volume, &metrics),
        resource_stream(namespaces, "namespaces", Update::Namespace, &metrics),
        resource_stream(claims, ClaimModes::RESOURCE, Update::Claim, &metrics),
        workload_stream::<Deployment>(&client, &config, &metrics),
        workload_stream::<StatefulSet>(&client, &config, &metrics),
        workload_stream::<DaemonSet>(&client, &config, &metrics),
        workload_stream::<ReplicaSet>(&client, &config, &metrics),
        workload_stream::<Job>(&client, &config, &metrics),
        workload_stream::<CronJob>(&client, &config, &metrics),
    ];
    let updates = futures_util::stream::select_all(streams);
    let task = tokio::spawn(run(updates, tx, metrics.clone()));
    ClusterWatch {
        task,
        feed: Feed { facts, metrics },
    }
}

type Updates = futures_util::stream::BoxStream<'static, (&'static str, Update)>;

/// The watch of one workload kind, read with [`WorkloadView`] (the rest of each object skipped).
fn workload_stream<K: WorkloadResource>(
    client: &Client,
    config: &watcher::Config,
    metrics: &CacheMetrics,
) -> Updates {
    let events = watcher(Api::<WorkloadView<K>>::all(client.clone()), config.clone());
    resource_stream(events, K::RESOURCE, workload_update::<K>, metrics)
}

/// A watch with backoff whose errors are logged and counted (the cache keeps its state), as a
/// stream of [`Update`]s.
fn resource_stream<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    resource: &'static str,
    update: fn(watcher::Event<K>) -> Update,
    metrics: &CacheMetrics,
) -> Updates
where
    K: Clone + std::fmt::Debug + Send + 'static,
{
    let label = ResourceLabel { resource };
    let synced = metrics.synced.get_or_create_owned(&label);
    let errors = metrics.errors.get_or_create_owned(&label);
    events
        .default_backoff()
        .filter_map(move |item| {
            let out = match item {
                Ok(event) => Some((resource, update(event))),
                Err(e) => {
                    errors.inc();
                    synced.set(0);
                    tracing::warn!(
                        resource,
                        "watch failed, serving the last known state and retrying: {e}"
                    );
                    None
                }
            };
            std::future::ready(out)
        })
        .boxed()
}

async fn run(
    mut updates: impl Stream<Item = (&'static str, Update)> + Unpin,
    published: watch::Sender<Arc<Facts>>,
    metrics: CacheMetrics,
) {
    let mut caches = Caches::default();
    while let Some((resource, update)) = updates.next().await {
        let (item, listing) = update.kind();
        let was_ready = caches.all_synced();
        let changed = caches.apply(update);
        if changed && caches.all_synced() {
            published.send_replace(Arc::new(caches.facts()));
            if !was_ready {
                tracing::info!("all cluster caches synced; ready");
            }
        }
        let label = ResourceLabel { resource };
        let (len, synced) = caches.size(resource);
        if changed {
            metrics
                .objects
                .get_or_create(&label)
                .set(i64::try_from(len).unwrap_or(i64::MAX));
        }
        if synced && !listing {
            metrics.synced.get_or_create(&label).set(1);
        }
        if item {
            metrics.events.get_or_create(&label).inc();
        }
    }
}

impl Update {
    /// (carries an object, is part of a list in progress)
    fn kind(&self) -> (bool, bool) {
        fn of<K>(e: &watcher::Event<K>) -> (bool, bool) {
            match e {
                watcher::Event::Init => (false, true),
                watcher::Event::InitApply(_) => (true, true),
                watcher::Event::InitDone => (false, false),
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => (true, false),
            }
        }
        match self {
            Update::Class(e) => of(e),
            Update::Volume(e) => of(e),
            Update::Namespace(e) => of(e),
            Update::Claim(e) => of(e),
            Update::Workload(_, e) => of(e),
        }
    }
}

impl Caches {
    /// (objects cached, synced) of a resource.
    fn size(&self, resource: &str) -> (usize, bool) {
        match resource {
            StorageClass::RESOURCE => (self.classes.map.len(), self.classes.synced),
            VolumeModes::RESOURCE => (self.volumes.map.len(), self.volumes.synced),
            ClaimModes::RESOURCE => (self.claims.map.len(), self.claims.synced),
            "namespaces" => (self.namespaces.map.len(), self.namespaces.synced),
            workload => WORKLOAD_RESOURCES
                .iter()
                .position(|r| *r == workload)
                .map_or((0, false), |i| {
                    (self.workloads[i].map.len(), self.workloads[i].synced)
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;

    use super::*;

    fn class(name: &str, default: bool, created: i64) -> StorageClass {
        let mut annotations = BTreeMap::new();
        if default {
            annotations.insert(DEFAULT_CLASS_ANNOTATIONS[0].to_owned(), "true".to_owned());
        }
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(annotations),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..ObjectMeta::default()
            },
            provisioner: format!("{name}.csi"),
            ..StorageClass::default()
        }
    }

    /// `version` stands for whatever else changes in the object.
    fn volume(name: &str, modes: &[&str], version: &str) -> VolumeModes {
        VolumeModes {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            spec: VolumeModesSpec {
                access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
            },
        }
    }

    #[test]
    fn a_volume_is_read_for_its_name_version_and_modes_only() {
        let pv: VolumeModes = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-1", "resourceVersion": "42", "labels": {"a": "b"},
                         "annotations": {"x": "y"}, "finalizers": ["kubernetes.io/pv-protection"]},
            "spec": {"accessModes": ["ReadWriteOnce", "ReadWriteOncePod"], "capacity": {"storage": "1Gi"},
                     "csi": {"driver": "d", "volumeHandle": "h"}},
            "status": {"phase": "Bound"}
        }))
        .unwrap();
        assert_eq!(pv.meta().name.as_deref(), Some("pv-1"));
        assert_eq!(pv.meta().resource_version.as_deref(), Some("42"));
        assert!(pv.meta().labels.is_none(), "nothing else is kept");
        assert_eq!(pv.value().to_string(), "[ReadWriteOnce, ReadWriteOncePod]");
        let bare: VolumeModes =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pv-2"}})).unwrap();
        assert_eq!(bare.value(), AccessModes::empty());
        assert_eq!(VolumeModes::plural(&()), "persistentvolumes");
        assert_eq!(VolumeModes::api_version(&()), "v1");
    }

    fn namespace(name: &str, team: Option<&str>, note: &str) -> PartialObjectMeta<Namespace> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: team.map(|t| BTreeMap::from([("team".to_owned(), t.to_owned())])),
                annotations: Some(BTreeMap::from([("note".to_owned(), note.to_owned())])),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    #[test]
    fn newest_default_class_wins() {
        let mut c = caches_with_empty_workloads();
        let list = |c: &mut Caches, classes: Vec<StorageClass>| {
            c.apply(Update::Class(watcher::Event::Init));
            for sc in classes {
                c.apply(Update::Class(watcher::Event::InitApply(sc)));
            }
            c.apply(Update::Class(watcher::Event::InitDone));
        };
        list(&mut c, vec![]);
        assert_eq!(c.default_class, None);
        list(
            &mut c,
            vec![
                class("a", true, 100),
                class("b", true, 200),
                class("c", false, 300),
            ],
        );
        assert_eq!(c.default_class.as_deref(), Some("b"));
        c.apply(Update::Class(watcher::Event::Apply(class("a2", true, 200))));
        // Same age: the first by name, deterministically.
        assert_eq!(c.default_class.as_deref(), Some("a2"));
    }

    #[test]
    fn a_change_no_rule_reads_publishes_nothing() {
        let mut c = Cache::<AccessModes>::default();
        assert!(!c.apply(watcher::Event::<VolumeModes>::Init));
        assert!(!c.apply(watcher::Event::InitApply(volume(
            "v",
            &["ReadWriteOnce"],
            "Bound"
        ))));
        assert!(c.apply(watcher::Event::<VolumeModes>::InitDone));
        assert!(!c.apply(watcher::Event::Apply(volume(
            "v",
            &["ReadWriteOnce"],
            "Released"
        ))));
        assert!(c.apply(watcher::Event::Apply(volume(
            "v",
            &["ReadWriteOncePod"],
            "Released"
        ))));
        assert!(!c.apply(watcher::Event::Delete(volume("w", &[], "Bound"))));
        assert!(c.apply(watcher::Event::Delete(volume("v", &[], "Bound"))));
        assert!(c.map.is_empty());
    }

    fn view<K: WorkloadResource>(name: &str, claims: &[&str], owner: Option<&str>) -> Update {
        let volumes: Vec<serde_json::Value> = claims
            .iter()
            .map(|c| serde_json::json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        let owners: Vec<serde_json::Value> = owner
            .iter()
            .map(|o| serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": o, "uid": "u", "controller": true}))
            .collect();
        let object: WorkloadView<K> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "ownerReferences": owners},
            "spec": {"template": {"spec": {"volumes": volumes}}}
        }))
        .unwrap();
        workload_update(watcher::Event::Apply(object))
    }

    #[test]
    fn workloads_are_kept_while_they_mount_a_claim_and_claims_by_namespace() {
        let mut c = caches_with_empty_workloads();
        for update in [
            Update::Class(watcher::Event::Init),
            Update::Class(watcher::Event::InitDone),
            Update::Volume(watcher::Event::Init),
            Update::Volume(watcher::Event::InitDone),
            Update::Namespace(watcher::Event::Init),
            Update::Namespace(watcher::Event::InitDone),
        ] {
            c.apply(update);
        }
        assert!(
            !c.apply(view::<Deployment>("plain", &[], None)),
            "no claim: not kept"
        );
        assert!(c.apply(view::<Deployment>("web", &["data"], None)));
        assert!(
            !c.apply(view::<ReplicaSet>("web-1", &["data"], Some("web"))),
            "a Deployment's ReplicaSet runs its template: not kept"
        );
        let claim: ClaimModes = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "shop", "resourceVersion": "1"},
            "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {}}
        }))
        .unwrap();
        assert!(c.apply(Update::Claim(watcher::Event::Apply(claim))));
        let facts = c.facts();
        let cluster = facts.cluster.as_ref().expect("synced");
        let in_shop: Vec<&str> = cluster
            .workloads_in("shop")
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(in_shop, ["web"]);
        assert_eq!(
            cluster.workloads_in("sho").count(),
            0,
            "a namespace is matched whole"
        );
        assert_eq!(
            cluster
                .claim_modes("shop", "data")
                .map(ToString::to_string)
                .as_deref(),
            Some("[ReadWriteOncePod]")
        );
        // The claim is unmounted: the workload leaves the cache.
        assert!(c.apply(view::<Deployment>("web", &[], None)));
        assert_eq!(
            c.facts()
                .cluster
                .expect("synced")
                .workloads_in("shop")
                .count(),
            0
        );
    }

    /// One object of the model cluster: resource (0 classes, 1 volumes, 2 namespaces), name,
    /// a variant of what a rule reads, and a variant of what it does not.
    #[derive(Clone, Debug)]
    enum Op {
        /// Create or update; `seen: false` happens while the watch is down (seen at the relist).
        Put {
            res: usize,
            name: u8,
            value: u8,
            other: u8,
            seen: bool,
        },
        Delete {
            res: usize,
            name: u8,
            seen: bool,
        },
        /// A relist of `res` starts (its items are then delivered interleaved with other ops).
        Relist {
            res: usize,
        },
        /// One step of every relist in progress.
        Step,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, 0..5u8, 0..3u8, 0..2u8, prop::bool::weighted(0.8))
                .prop_map(|(res, name, value, other, seen)| Op::Put { res, name, value, other, seen }),
            2 => (0..3usize, 0..5u8, prop::bool::weighted(0.8))
                .prop_map(|(res, name, seen)| Op::Delete { res, name, seen }),
            1 => (0..3usize).prop_map(|res| Op::Relist { res }),
            3 => Just(Op::Step),
        ]
    }

    /// (name, value, other) of a model object as a watcher event's object.
    fn object(res: usize, name: u8, value: u8, other: u8) -> Update {
        let name = format!("o{name}");
        match res {
            0 => Update::Class(watcher::Event::Apply(StorageClass {
                provisioner: if value == 2 {
                    "kubernetes.io/gce-pd".to_owned()
                } else {
                    format!("p{value}.csi")
                },
                ..class(&name, value == 1, i64::from(other) * 100)
            })),
            1 => Update::Volume(watcher::Event::Apply(volume(
                &name,
                [
                    &["ReadWriteOnce"][..],
                    &["ReadWriteOncePod"],
                    &["ReadWriteMany", "ReadOnlyMany"],
                ][usize::from(value)],
                ["Bound", "Released"][usize::from(other)],
            ))),
            _ => Update::Namespace(watcher::Event::Apply(namespace(
                &name,
                [None, Some("a"), Some("b")][usize::from(value)],
                ["x", "y"][usize::from(other)],
            ))),
        }
    }

    fn init(update: Update) -> Update {
        match update {
            Update::Class(watcher::Event::Apply(o)) => Update::Class(watcher::Event::InitApply(o)),
            Update::Volume(watcher::Event::Apply(o)) => {
                Update::Volume(watcher::Event::InitApply(o))
            }
            Update::Namespace(watcher::Event::Apply(o)) => {
                Update::Namespace(watcher::Event::InitApply(o))
            }
            other => other,
        }
    }

    fn delete(update: Update) -> Update {
        match update {
            Update::Class(watcher::Event::Apply(o)) => Update::Class(watcher::Event::Delete(o)),
            Update::Volume(watcher::Event::Apply(o)) => Update::Volume(watcher::Event::Delete(o)),
            Update::Namespace(watcher::Event::Apply(o)) => {
                Update::Namespace(watcher::Event::Delete(o))
            }
            other => other,
        }
    }

    fn marker(res: usize, done: bool) -> Update {
        fn e<K>(done: bool) -> watcher::Event<K> {
            if done {
                watcher::Event::InitDone
            } else {
                watcher::Event::Init
            }
        }
        match res {
            0 => Update::Class(e(done)),
            1 => Update::Volume(e(done)),
            _ => Update::Namespace(e(done)),
        }
    }

    type Model = [BTreeMap<u8, (u8, u8)>; 3];

    /// The facts of `model`, built from the model alone (not through `Caches`): what each
    /// rule reads of each object, as [`object`] describes it.
    fn expected(model: &Model) -> Facts {
        let name = |n: &u8| format!("o{n}");
        let storage_classes = model[0]
            .iter()
            .map(|(n, (value, _))| {
                let provisioner = if *value == 2 {
                    "kubernetes.io/gce-pd".to_owned()
                } else {
                    format!("p{value}.csi")
                };
                (name(n), StorageClassFacts { provisioner })
            })
            .collect();
        // The newest class marked default (created at `other` * 100 s); among equals, the
        // first by name.
        let default_storage_class = model[0]
            .iter()
            .filter(|(_, (value, _))| *value == 1)
            .max_by_key(|(n, (_, other))| (*other, std::cmp::Reverse(**n)))
            .map(|(n, _)| name(n));
        let volumes = model[1]
            .iter()
            .map(|(n, (value, _))| {
                let modes = [
                    &["ReadWriteOnce"][..],
                    &["ReadWriteOncePod"],
                    &["ReadWriteMany", "ReadOnlyMany"],
                ][usize::from(*value)];
                let modes: Vec<String> = modes.iter().map(|m| (*m).to_owned()).collect();
                (Arc::from(name(n)), AccessModes::from_optional(Some(&modes)))
            })
            .collect();
        let namespaces = model[2]
            .iter()
            .map(|(n, (value, _))| {
                let labels: Labels = [None, Some("a"), Some("b")][usize::from(*value)]
                    .map(|team| ("team".to_owned(), team.to_owned()))
                    .into_iter()
                    .collect();
                (Arc::from(name(n)), Arc::new(labels))
            })
            .collect();
        Facts {
            cluster: Some(ClusterFacts {
                storage_classes,
                default_storage_class,
                volumes,
                namespaces,
                claims: ByName::default(),
                workloads: vec![ByName::default(); WORKLOAD_KINDS],
            }),
        }
    }

    /// Caches whose claim and workload watches have listed nothing (the model leaves them be).
    fn caches_with_empty_workloads() -> Caches {
        let mut c = Caches::default();
        c.apply(Update::Claim(watcher::Event::Init));
        c.apply(Update::Claim(watcher::Event::InitDone));
        for kind in 0..WORKLOAD_KINDS {
            c.apply(Update::Workload(kind, watcher::Event::Init));
            c.apply(Update::Workload(kind, watcher::Event::InitDone));
        }
        c
    }

    /// Applies `update`; a relist's start and items must not change what readers see (they
    /// see a relist only whole, at its end).
    fn apply(c: &mut Caches, update: Update) {
        let (_, listing) = update.kind();
        let before = c.facts();
        c.apply(update);
        if listing {
            assert_eq!(c.facts(), before, "half a relist is visible");
        }
    }

    #[test]
    fn readers_never_see_half_a_list() {
        /// Lists `objects` of `res` into `c`, each step checked by [`apply`].
        fn list(c: &mut Caches, res: usize, objects: &BTreeMap<u8, (u8, u8)>) {
            apply(c, marker(res, false));
            for (n, (value, other)) in objects {
                apply(c, init(object(res, *n, *value, *other)));
            }
            apply(c, marker(res, true));
        }
        let mut c = caches_with_empty_workloads();
        let first = BTreeMap::from([(0, (0, 0)), (1, (0, 0)), (2, (0, 0))]);
        let mut model: Model = [first.clone(), first.clone(), first];
        for (res, objects) in model.iter().enumerate() {
            list(&mut c, res, objects);
        }
        assert_eq!(c.facts(), expected(&model));
        // A relist of each resource in which every object changed and one is gone.
        for res in 0..model.len() {
            model[res] = BTreeMap::from([(0, (1, 1)), (1, (2, 0))]);
            list(&mut c, res, &model[res]);
            assert_eq!(c.facts(), expected(&model), "after the relist of {res}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the order of events, relists (interleaved with other resources' events)
        /// and events missed while a watch was down (then relisted, as after a 410), the
        /// published facts equal those of one full list of the final state.
        #[test]
        fn facts_after_any_interleaving_equal_a_full_list(ops in prop::collection::vec(op(), 0..60)) {
            let mut model: Model = Default::default();
            let mut c = caches_with_empty_workloads();
            for res in 0..3 {
                apply(&mut c, marker(res, false));
                apply(&mut c, marker(res, true));
            }
            // Per resource: the items of a relist in progress, and events held back meanwhile
            // (the watch after a list delivers what happened during it).
            let mut relists: [Option<VecDeque<Update>>; 3] = Default::default();
            let mut held: [Vec<Update>; 3] = Default::default();
            let mut missed = [false; 3];
            let step = |c: &mut Caches, relists: &mut [Option<VecDeque<Update>>; 3], held: &mut [Vec<Update>; 3], res: usize| {
                if let Some(items) = &mut relists[res] {
                    match items.pop_front() {
                        Some(item) => apply(c, item),
                        None => {
                            relists[res] = None;
                            apply(c, marker(res, true));
                            for u in held[res].drain(..) {
                                apply(c, u);
                            }
                        }
                    }
                }
            };
            let start = |c: &mut Caches, relists: &mut [Option<VecDeque<Update>>; 3], model: &Model, res: usize| {
                apply(c, marker(res, false));
                relists[res] = Some(
                    model[res].iter().map(|(n, (v, o))| init(object(res, *n, *v, *o))).collect(),
                );
            };
            for op in ops {
                let (res, event, seen) = match op {
                    Op::Put { res, name, value, other, seen } => {
                        model[res].insert(name, (value, other));
                        (res, Some(object(res, name, value, other)), seen)
                    }
                    Op::Delete { res, name, seen } => match model[res].remove(&name) {
                        Some((value, other)) => (res, Some(delete(object(res, name, value, other))), seen),
                        None => (res, None, true),
                    },
                    Op::Relist { res } => {
                        if relists[res].is_none() {
                            start(&mut c, &mut relists, &model, res);
                            missed[res] = false;
                        }
                        continue;
                    }
                    Op::Step => {
                        for res in 0..3 {
                            step(&mut c, &mut relists, &mut held, res);
                        }
                        continue;
                    }
                };
                match (event, seen) {
                    (Some(u), true) if relists[res].is_some() => held[res].push(u),
                    (Some(u), true) => apply(&mut c, u),
                    (Some(_), false) => missed[res] = true,
                    (None, _) => {}
                }
            }
            for res in 0..3 {
                while relists[res].is_some() {
                    step(&mut c, &mut relists, &mut held, res);
                }
                if missed[res] {
                    start(&mut c, &mut relists, &model, res);
                    while relists[res].is_some() {
                        step(&mut c, &mut relists, &mut held, res);
                    }
                }
            }
            prop_assert_eq!(c.facts(), expected(&model));
        }
    }
}
