//! What the cluster knows that a rule may need. Built from watch caches by `cluster/`, or empty
//! when running without cluster access; the policy never fetches anything itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::AccessModes;
use crate::migrate::model::workloads::WorkloadInfo;

/// Objects by name, as a persistent map (a B-tree): a copy shares everything with the original,
/// and a change copies only the path to one entry (O(log n)), so the caches publish a new
/// snapshot per event without copying the cluster.
pub type ByName<V> = imbl::OrdMap<Arc<str>, V>;

/// The labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A snapshot of cluster knowledge. `cluster: None` means "unknown": no cluster access, or the
/// caches have not synced yet. Unknown facts never lead to a mutation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub cluster: Option<ClusterFacts>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFacts {
    /// A persistent map as well; keyed by `String`, as a hundred classes make any key cheap.
    pub storage_classes: imbl::OrdMap<String, StorageClassFacts>,
    /// The class the API server fills in for claims without `storageClassName`.
    pub default_storage_class: Option<String>,
    /// PersistentVolume name -> its access modes.
    pub volumes: ByName<AccessModes>,
    /// Namespace name -> its labels.
    pub namespaces: ByName<Arc<Labels>>,
    /// `namespace/name` of every PersistentVolumeClaim -> its access modes (rule W2).
    pub claims: ByName<AccessModes>,
    /// `namespace/name` of every workload whose pod template mounts a claim -> what the
    /// judgement reads of it (rule W2, and M1's look before it rewrites a claim). Deployments,
    /// StatefulSets, DaemonSets, ReplicaSets and Jobs without a controller, CronJobs; not pods.
    /// One map per kind, in the order the caches watch them.
    pub workloads: Vec<ByName<Arc<WorkloadInfo>>>,
}

impl ClusterFacts {
    /// The workloads of `namespace` whose pod templates mount a claim (a range of the map).
    pub fn workloads_in<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Arc<WorkloadInfo>> + 'a {
        let from: Arc<str> = Arc::from(format!("{namespace}/"));
        self.workloads.iter().flat_map(move |kind| {
            let prefix = from.clone();
            kind.range(from.clone()..)
                .take_while(move |(k, _)| k.starts_with(&*prefix))
                .map(|(_, w)| w)
        })
    }

    /// The access modes of claim `namespace/name`, if it exists.
    pub fn claim_modes(&self, namespace: &str, name: &str) -> Option<&AccessModes> {
        self.claims.get(format!("{namespace}/{name}").as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageClassFacts {
    pub provisioner: String,
}

impl StorageClassFacts {
    /// In-tree provisioners are named `kubernetes.io/…`; anything else is an external (CSI)
    /// provisioner. ReadWriteOncePod is only supported for CSI volumes.
    pub fn is_csi(&self) -> bool {
        !self.provisioner.starts_with("kubernetes.io/")
    }
}
