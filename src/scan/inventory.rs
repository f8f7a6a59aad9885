//! Listing: every page is reduced to what the analysis reads before the next is fetched, so a
//! scan of a large cluster never holds more than one page of whole objects.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::migrate::eligibility::{ClaimInfo, VolumeInfo};
use crate::migrate::model::workloads::{PodInfo, WorkloadInfo, Workloads};
use crate::policy::StorageClassFacts;

/// Objects per list request (the page size kubectl uses).
pub const PAGE_SIZE: u32 = 500;

/// What [`collect`] listed, reduced to what the analysis reads. With a namespace, claims,
/// workloads and pods are those of the namespace; PersistentVolumes and StorageClasses are
/// cluster-scoped and always listed whole.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub claims: Vec<ClaimInfo>,
    pub volumes: Vec<VolumeInfo>,
    /// StorageClass name -> its provisioner.
    pub storage_classes: BTreeMap<String, StorageClassFacts>,
    /// Every workload with a pod template, and every pod.
    pub workloads: Workloads,
}

impl Inventory {
    /// The inventory of whole objects (as [`collect`] reduces each page).
    pub fn of(
        claims: &[PersistentVolumeClaim],
        volumes: &[PersistentVolume],
        storage_classes: &[StorageClass],
        workloads: Workloads,
    ) -> Inventory {
        Inventory {
            claims: claims.iter().map(ClaimInfo::from).collect(),
            volumes: volumes.iter().map(VolumeInfo::from).collect(),
            storage_classes: storage_classes.iter().filter_map(class_facts).collect(),
            workloads,
        }
    }
}

fn class_facts(sc: &StorageClass) -> Option<(String, StorageClassFacts)> {
    let facts = StorageClassFacts {
        provisioner: sc.provisioner.clone(),
    };
    Some((sc.metadata.name.clone()?, facts))
}

/// A list request that failed; the scan cannot go on without it.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {resource}: {}", describe(.error))]
pub struct ScanError {
    /// The plural resource name, e.g. `persistentvolumeclaims`.
    pub resource: &'static str,
    /// In the message, so not also a `source()`.
    pub error: kube::Error,
}

/// `Forbidden (403): <the API server's message>` for API errors, else the error and its causes.
pub(super) fn describe(e: &kube::Error) -> String {
    if let kube::Error::Api(status) = e {
        let reason = if status.reason.is_empty() {
            "error"
        } else {
            status.reason.as_str()
        };
        return format!("{reason} ({}): {}", status.code, status.message);
    }
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    crate::one_line(&parts.join(": "))
}

/// Lists claims, volumes, StorageClasses, the workloads and the pods, `namespace` limiting the
/// namespaced ones. `progress` gets one line per page (`listed 1500 persistentvolumeclaims, about 300 more…`)
/// and one when a resource is done (`listed 1800 persistentvolumeclaims`).
pub async fn collect(
    client: &Client,
    namespace: Option<&str>,
    mut progress: impl FnMut(&str),
) -> Result<Inventory, ScanError> {
    let p = &mut progress;
    let claims = api(client, namespace);
    Ok(Inventory {
        claims: list(&claims, "persistentvolumeclaims", p, |c| {
            ClaimInfo::from(&c)
        })
        .await?,
        volumes: list(&Api::all(client.clone()), "persistentvolumes", p, |v| {
            VolumeInfo::from(&v)
        })
        .await?,
        storage_classes: list(&Api::all(client.clone()), "storageclasses", p, |sc| {
            class_facts(&sc)
        })
        .await?
        .into_iter()
        .flatten()
        .collect(),
        workloads: collect_workloads(client, namespace, p).await?,
    })
}

/// Lists every kind of workload that runs pods from a template, and the pods themselves (the
/// users of claims), `namespace` limiting them; one page of whole objects at a time.
pub async fn collect_workloads(
    client: &Client,
    namespace: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<Workloads, ScanError> {
    let p = progress;
    // Only what can use a claim is kept: a pod that mounts one, a workload whose template mounts
    // one or that makes claims from templates, and the controllers of those pods (whose
    // template may not say so: a webhook can add the volume), listed pods first.
    let pods: Vec<PodInfo> = list(&api::<Pod>(client, namespace), "pods", p, |pod| {
        let pod = PodInfo::from(&pod);
        (!pod.claims.is_empty()).then_some(pod)
    })
    .await?
    .into_iter()
    .flatten()
    .collect();
    let mut owners: HashSet<(String, String, String)> = pods
        .iter()
        .filter_map(|pod| {
            let o = pod.owner.as_ref()?;
            Some((o.kind.clone(), pod.namespace.clone(), o.name.clone()))
        })
        .collect();
    let mut workloads = Vec::new();
    macro_rules! kind {
        ($k:ty, $resource:literal) => {{
            let kept: Vec<WorkloadInfo> = list(&api::<$k>(client, namespace), $resource, p, |o| {
                let w = WorkloadInfo::from(&o);
                let templates = w
                    .statefulset
                    .as_ref()
                    .is_some_and(|s| !s.templates.is_empty());
                let owns = owners.contains(&(
                    w.kind.as_str().to_owned(),
                    w.namespace.clone(),
                    w.name.clone(),
                ));
                (!w.claims.is_empty() || templates || owns).then_some(w)
            })
            .await?
            .into_iter()
            .flatten()
            .collect();
            // A kept ReplicaSet's or Job's own controller is kept too.
            for w in &kept {
                if let Some(o) = &w.owner {
                    owners.insert((o.kind.clone(), w.namespace.clone(), o.name.clone()));
                }
            }
            workloads.extend(kept);
        }};
    }
    kind!(ReplicaSet, "replicasets");
    kind!(Job, "jobs");
    kind!(Deployment, "deployments");
    kind!(CronJob, "cronjobs");
    kind!(StatefulSet, "statefulsets");
    kind!(DaemonSet, "daemonsets");
    kind!(ReplicationController, "replicationcontrollers");
    Ok(Workloads { workloads, pods })
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Lists every object of `api` in pages of [`PAGE_SIZE`], whole.
pub(crate) async fn list_all<K>(
    api: &Api<K>,
    resource: &'static str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<K>, ScanError>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug,
{
    list(api, resource, progress, |k| k).await
}

/// Lists every object of `api` in pages of [`PAGE_SIZE`], keeping `keep(object)` of each: only
/// one page of whole objects is held at a time.
async fn list<K, T>(
    api: &Api<K>,
    resource: &'static str,
    progress: &mut dyn FnMut(&str),
    mut keep: impl FnMut(K) -> T,
) -> Result<Vec<T>, ScanError>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug,
{
    let fail = |error| ScanError { resource, error };
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE_SIZE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = match api.list(&params).await {
            Ok(page) => page,
            // The continue token expired (the listing outlived the API server's history window).
            // Like client-go's pager, fall back to one unpaginated list rather than mixing two
            // snapshots. (410 Gone by its code: kube's `Status` has no helper for it.)
            Err(kube::Error::Api(status)) if status.code == 410 && token.is_some() => {
                progress(&format!(
                    "the {resource} list expired after {} objects; listing them again in one request…",
                    items.len()
                ));
                let all = api.list(&ListParams::default()).await.map_err(fail)?;
                progress(&format!("listed {} {resource}", all.items.len()));
                return Ok(all.items.into_iter().map(keep).collect());
            }
            Err(e) => return Err(fail(e)),
        };
        items.extend(page.items.into_iter().map(&mut keep));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            progress(&format!("listed {} {resource}", items.len()));
            return Ok(items);
        }
        match page.metadata.remaining_item_count {
            Some(more) if more > 0 => progress(&format!(
                "listed {} {resource}, about {more} more…",
                items.len()
            )),
            _ => progress(&format!("listed {} {resource}…", items.len())),
        }
    }
}
