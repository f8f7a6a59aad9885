//! The resource table: what the fake serves under which path.

use super::*;

/// What the fake knows about one resource (one row of the API server's REST storage).
#[derive(Clone, Debug)]
pub struct ResourceDef {
    /// API group, `""` for the core group.
    pub group: String,
    pub version: String,
    /// Plural resource name as in URLs.
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Has a `status` subresource: the main resource ignores status changes and vice versa.
    pub status_subresource: bool,
    /// Has an `autoscaling/v1` `scale` subresource mapped to `spec.replicas`.
    pub scale_subresource: bool,
    /// The registry maintains `metadata.generation` (1 on create, +1 on spec change).
    pub generation: bool,
    /// DELETE answers the deleted object (`ReturnDeletedObject`), else a `Success` Status.
    pub return_deleted_object: bool,
    /// `status` the create strategy leaves (`None`: kept as sent; `Some(Null)`: removed).
    pub initial_status: Option<Value>,
    /// Top-level fields a BOOKMARK object carries as `{}` (Go zero-value structs).
    pub bookmark_fields: Vec<String>,
    /// List items carry `kind`/`apiVersion` (true for custom resources).
    pub items_carry_type_meta: bool,
}

impl ResourceDef {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn row(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: Option<Value>,
        generation: bool,
        return_deleted_object: bool,
    ) -> Self {
        let status_subresource = status.is_some();
        ResourceDef {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource,
            scale_subresource: false,
            generation,
            return_deleted_object,
            initial_status: status,
            bookmark_fields: if status_subresource {
                vec!["spec".into(), "status".into()]
            } else {
                Vec::new()
            },
            items_carry_type_meta: false,
        }
    }

    /// The built-in table: what the product reads and writes, and the kinds the chart renders
    /// (helm maps each of them through discovery).
    pub fn builtin() -> Vec<ResourceDef> {
        let pending = || Some(json!({"phase": "Pending"}));
        let zero =
            |fields: &[&str]| Some(fields.iter().map(|f| (f.to_string(), json!(0))).collect());
        // group, version, plural, kind, namespaced, the status create leaves (Some: the kind has
        // a status subresource), generation, DELETE answers the object.
        #[rustfmt::skip]
        let mut defs = vec![
            Self::row("", "v1", "persistentvolumes", "PersistentVolume", false, pending(), false, true),
            Self::row("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, pending(), false, true),
            Self::row("", "v1", "pods", "Pod", true, pending(), true, true),
            Self::row("", "v1", "namespaces", "Namespace", false, Some(json!({"phase": "Active"})), false, true),
            Self::row("", "v1", "services", "Service", true, Some(json!({"loadBalancer": {}})), false, true),
            Self::row("", "v1", "configmaps", "ConfigMap", true, None, false, false),
            Self::row("", "v1", "secrets", "Secret", true, None, false, false),
            Self::row("", "v1", "serviceaccounts", "ServiceAccount", true, None, false, false),
            Self::row("apps", "v1", "deployments", "Deployment", true, Some(json!({})), true, false),
            Self::row("apps", "v1", "statefulsets", "StatefulSet", true, zero(&["replicas", "availableReplicas"]), true, false),
            Self::row("apps", "v1", "replicasets", "ReplicaSet", true, zero(&["replicas"]), true, false),
            Self::row("apps", "v1", "daemonsets", "DaemonSet", true,
                zero(&["currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"]), true, false),
            Self::row("", "v1", "replicationcontrollers", "ReplicationController", true, zero(&["replicas"]), true, false),
            Self::row("batch", "v1", "jobs", "Job", true, Some(json!({})), true, false),
            Self::row("batch", "v1", "cronjobs", "CronJob", true, Some(json!({})), true, false),
            Self::row("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true,
                zero(&["currentHealthy", "desiredHealthy", "disruptionsAllowed", "expectedPods"]), true, false),
            Self::row("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true, None, true, false),
            Self::row("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, None, false, false),
            Self::row("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false, None, false, false),
            Self::row("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                "ValidatingWebhookConfiguration", false, None, true, false),
            Self::row("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
                "MutatingWebhookConfiguration", false, None, true, false),
            Self::row("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", true,
                zero(&["desiredReplicas"]), true, false),
            Self::row("storage.k8s.io", "v1", "storageclasses", "StorageClass", false, None, false, true),
            // `migrate` records its history as Events.
            Self::row("events.k8s.io", "v1", "events", "Event", true, None, false, false),
        ];
        for d in &mut defs {
            if d.group == "apps" {
                d.scale_subresource = true;
            }
        }
        defs
    }

    /// A custom resource (as served for a CRD with `status` subresource).
    pub fn custom(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        let mut def = Self::row(
            group,
            version,
            plural,
            kind,
            namespaced,
            Some(json!({})),
            true,
            true,
        );
        def.initial_status = Some(Value::Null);
        def.bookmark_fields = Vec::new();
        def.items_carry_type_meta = true;
        def
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `persistentvolumeclaims`, `deployments.apps`.
    pub(super) fn qualified_resource(&self) -> String {
        qualify(&self.plural, &self.group)
    }
}

pub(super) fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}
