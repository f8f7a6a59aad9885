//! What the cluster knows that a rule may need. Built from watch caches by `cluster/`, or empty
//! when running without cluster access; the policy never fetches anything itself.

use std::collections::{BTreeMap, HashMap};

use super::AccessModes;

/// A snapshot of cluster knowledge. `cluster: None` means "unknown": no cluster access, or the
/// caches have not synced yet. Unknown facts never lead to a mutation.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub cluster: Option<ClusterFacts>,
}

#[derive(Clone, Debug, Default)]
pub struct ClusterFacts {
    pub storage_classes: HashMap<String, StorageClassFacts>,
    /// The class the API server fills in for claims without `storageClassName`.
    pub default_storage_class: Option<String>,
    /// PersistentVolume name -> its access modes.
    pub volumes: HashMap<String, AccessModes>,
    /// Namespace name -> its labels.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
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
