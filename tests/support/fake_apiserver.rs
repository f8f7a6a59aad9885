//! An in-process fake Kubernetes API server for tests that drive the real `kube::Client`.
//!
//! It serves plain HTTP on `127.0.0.1:0` (axum) and keeps the API server's semantics for what it
//! implements; response shapes follow the real responses in `tests/fixtures/api/`.
//!
//! ```rust,ignore
//! let server = FakeApiServer::start().await;
//! server.seed_list_fixture("/api/v1/persistentvolumes", &api_fixture("list-persistentvolumes.json"));
//! server.on_write(|store, event| { /* emulate a controller: store.patch(&event.path(), ..) */ });
//! let pvs: kube::Api<PersistentVolume> = kube::Api::all(server.client());
//! let mut writes = server.subscribe(); // await writes instead of sleeping
//! ```
//!
//! # Test hooks
//!
//! * [`FakeApiServer::seed_list_fixture`] loads a real list response as is (uids and
//!   resourceVersions kept, global counter moved past them, history compacted, no events).
//! * Direct helpers `get`/`list`/`create`/`put`/`patch`/`delete` (on [`FakeApiServer`], and on
//!   [`Store`] for hooks) take API paths (`/api/v1/namespaces/ns/persistentvolumeclaims/x`,
//!   optionally `/status` or `/scale`) and skip HTTP (no request log, no injected failures), but
//!   are real writes: new resourceVersion, watch events, hooks. Unlike POST they keep `status`,
//!   `uid` and `creationTimestamp` as given; `put`/`patch` also change `status` on the main path.
//!   `metadata.resourceVersion` in a `put` body or a `patch` is a precondition as over HTTP.
//! * [`FakeApiServer::on_write`] hooks run after every write (also writes made by hooks, in
//!   order) under the store lock with `&mut Store`; calling `FakeApiServer` methods from a hook
//!   deadlocks. [`FakeApiServer::subscribe`] (every write), [`FakeApiServer::resource_version_rx`]
//!   and [`FakeApiServer::open_watches_rx`] let tests await changes without sleeping. An open
//!   watch is counted until its stream ends or the server notices the client left.
//! * [`FakeApiServer::compact`], [`FakeApiServer::bookmark`], [`FakeApiServer::break_watches`]
//!   (the connection is cut mid-stream; kube's watcher resumes from its last resourceVersion),
//!   [`FakeApiServer::fail_next`] (note that kube 5's client itself retries 429/503/504),
//!   [`FakeApiServer::requests`] (`METHOD /path?decoded=query`).
//!
//! # Implemented
//!
//! * Paths `/api/v1/...` and `/apis/{group}/{version}/...` for the resources of a built-in table
//!   ([`ResourceDef::builtin`]; more with [`FakeApiServer::add_resource`]): collections, objects and
//!   the `status` / `scale` subresources. A namespaced resource listed without a namespace
//!   (`/api/v1/persistentvolumeclaims`) spans all namespaces.
//! * One global resourceVersion counter (like etcd's revision): every write bumps it. A write that
//!   changes nothing (same bytes) is not a write: no new resourceVersion, no watch event.
//! * GET object; GET list with `labelSelector` (`k=v`, `k==v`, `k!=v`, `k in (a,b)`,
//!   `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`), `fieldSelector` (`metadata.name`,
//!   `metadata.namespace` with `=`, `==`, `!=`; other fields answer 400 like an unsupported field
//!   label), `limit` + `continue`: the real token (unpadded URL-safe base64 of
//!   `{"v":"meta.k8s.io/v1","rv":N,"start":"key\0"}`), etcd key order (`namespace/name`),
//!   `remainingItemCount` when no selector is given, and consistent snapshots: every page is
//!   served at the first page's resourceVersion, reconstructed from the history; an expired
//!   token answers 410 with an "inconsistent" continue token (rv -1) in `metadata.continue`.
//!   `resourceVersion` + `resourceVersionMatch` (`NotOlderThan`, `Exact` = a snapshot at that
//!   version; unset = `NotOlderThan`; invalid combinations answer 422 as on a real server).
//!   Items of lists carry no `kind`/`apiVersion` (they do for resources added with
//!   [`ResourceDef::custom`], as for CRDs).
//! * WATCH (`watch=true|1`, or GET of an object with `watch`): newline-delimited JSON events sent
//!   as chunks. `resourceVersion` unset or `"0"`: current state as ADDED, then live events;
//!   `N`: every event after `N` from the history, then live (kube's default `ListWatch`
//!   watcher: list with `limit=500`, then watch from the list's resourceVersion, resume from the
//!   last event or bookmark, relist after 410); `sendInitialEvents=true` (requires
//!   `resourceVersionMatch=NotOlderThan` and `allowWatchBookmarks=true`, else 422 as on a real
//!   server): current state as ADDED then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`.
//!   Label/field selectors behave like the watch cache: an object that stops matching is sent as
//!   DELETED (its previous state with the new resourceVersion), one that starts matching as ADDED.
//!   `timeoutSeconds` ends the stream cleanly. A resourceVersion older than the compaction point
//!   gives HTTP 200 with a single `ERROR` event (`Status` 410 `Expired`, "too old resource
//!   version"); a resourceVersion in the future gives a single `ERROR` event 504 `Timeout`
//!   ("Too large resource version"). Bookmarks only when the test calls
//!   [`FakeApiServer::bookmark`], and only to watches with `allowWatchBookmarks=true`.
//! * POST create: 201; `generateName`; 409 `AlreadyExists` (prefixed "object is being deleted: "
//!   when it is); 422 when neither name nor generateName; 500 when a resourceVersion is set (as
//!   etcd3 storage answers); the server sets `uid`, `creationTimestamp`, `resourceVersion`,
//!   `generation: 1` (kinds that have one), drops `deletionTimestamp`, and resets `status` for
//!   kinds with a status subresource to what the real strategy leaves (PV `phase: Pending` +
//!   `lastPhaseTransitionTime`, PVC and Pod `phase: Pending` (no `qosClass`), Namespace
//!   `phase: Active`, custom resources: removed, Node: kept). `spec.replicas` of apps workloads
//!   defaults to 1.
//! * PUT replace: 404 when absent; 409 `Conflict` with the fixture's message when
//!   `metadata.resourceVersion` is stale (unset = unconditional update); a non-empty
//!   `metadata.uid` in the body is a storage precondition (409 "StorageError: invalid object ...
//!   Precondition failed: UID in precondition"); `status` changes are ignored on the main resource
//!   and everything but `status` on `/status`; `generation` is bumped when `spec` changes;
//!   `uid`/`creationTimestamp`/`deletionTimestamp` are kept; new finalizers on an object being
//!   deleted answer 422; removing the last finalizer of an object being deleted deletes it
//!   (DELETED event carries its last stored state).
//! * PATCH: `application/merge-patch+json` (RFC 7386), `application/json-patch+json` (RFC 6902,
//!   failed op = 422), `application/strategic-merge-patch+json` **treated as a merge patch**
//!   (no list merge keys, no `$patch` directives: a strategic patch of a list replaces it).
//!   `application/apply-patch+yaml` (server-side apply) answers 415. A patched
//!   `metadata.resourceVersion` is a precondition (409 when stale); a patched different
//!   `metadata.uid` is 422 "field is immutable" (as real PATCH has no uid precondition).
//! * DELETE with `DeleteOptions` (body or query): `preconditions.uid` / `.resourceVersion` (409 with
//!   the fixture's message), `dryRun`, `propagationPolicy` (validated), `gracePeriodSeconds`
//!   (accepted). Objects with finalizers get `deletionTimestamp` + `deletionGracePeriodSeconds: 0`
//!   (+ generation bump) and stay (MODIFIED) until an update removes the last finalizer; others
//!   are removed at once (DELETED). The answer is the object for kinds whose registry returns it
//!   (PV, PVC, Pod, Namespace, Service, StorageClass, custom resources), else a `Success` Status.
//!   DELETE on a collection (deletecollection) with selectors.
//! * `/scale` (deployments, statefulsets, replicasets): `autoscaling/v1` `Scale` mapped to
//!   `spec.replicas`, `status.replicas` and the selector string; GET/PUT/PATCH with the same
//!   precondition rules; negative replicas answer 422.
//! * `dryRun=All` on every write.
//! * Legacy discovery built from the resource table: `/version` (1.35), `/api`, `/apis`,
//!   `/api/v1`, `/apis/{group}/{version}` (resources with their `status`/`scale`
//!   subresources), enough for client-go's RESTMapper (helm) and kube's `Discovery`.
//! * Test hooks on [`FakeApiServer`]: seeding real list fixtures, direct store access (no HTTP),
//!   `compact`, `bookmark`, `break_watches`, `fail_next`, `forbid` (403 under a path, as RBAC
//!   answers), the request log, write hooks
//!   (`on_write`) and channels to await writes / the resourceVersion / open watches.
//!
//! # Not implemented (differences from a real API server)
//!
//! * Aggregated discovery and OpenAPI documents, the deprecated `/watch/` path prefix,
//!   protobuf/CBOR/YAML bodies, gzip, table output, `pretty`. Path segments are not
//!   percent-decoded.
//! * Authentication, authorization, admission (no mutating/validating webhooks, no
//!   `NamespaceLifecycle`: creating in a namespace that does not exist succeeds), quotas,
//!   `fieldValidation`, validation and defaulting of specs (besides `spec.replicas` = 1 for apps
//!   workloads and the status reset on create). `managedFields` are stored as sent and never
//!   maintained.
//! * Server-side apply (415). Strategic merge patch semantics (see above).
//! * Controllers: no garbage collector (`propagationPolicy` is accepted but dependents are never
//!   deleted, no `orphan`/`foregroundDeletion` finalizers are added; `Orphan` removes the owner
//!   reference from the objects of the namespace at once, as the collector would), no namespace
//!   controller (deleting a namespace is an ordinary delete: no `Terminating` phase, contents stay),
//!   no graceful pod deletion (pods go at once, as an unscheduled pod does), no PV binder, no
//!   scheduler. Emulate controllers with [`FakeApiServer::on_write`].
//! * GET with `resourceVersion` is served from the current state. Requests with a too large
//!   resourceVersion fail at once instead of waiting up to 3 s for it.
//! * Bookmark objects carry empty `spec`/`status` like the PV fixture does, not every Go
//!   zero-value field of the kind.
//! * Deleting an object that is already being deleted changes nothing and answers the object
//!   (as for kinds without graceful deletion).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, watch};

/// Annotation of the BOOKMARK that ends the initial events of a `sendInitialEvents` watch.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How long a watch without `timeoutSeconds` stays open.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Reads `tests/fixtures/api/{name}`.
pub fn api_fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/api")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Resource table
// ---------------------------------------------------------------------------------------------

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
    /// etcd key prefix under `/registry/` (appears in storage error messages).
    pub storage_prefix: String,
}

impl ResourceDef {
    #[allow(clippy::too_many_arguments)]
    fn row(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: Option<Value>,
        generation: bool,
        return_deleted_object: bool,
        storage_prefix: &str,
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
            storage_prefix: storage_prefix.into(),
        }
    }

    /// The built-in table.
    pub fn builtin() -> Vec<ResourceDef> {
        let mut defs = vec![
            Self::row(
                "",
                "v1",
                "persistentvolumes",
                "PersistentVolume",
                false,
                Some(json!({"phase": "Pending"})),
                false,
                true,
                "persistentvolumes",
            ),
            Self::row(
                "",
                "v1",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
                Some(json!({"phase": "Pending"})),
                false,
                true,
                "persistentvolumeclaims",
            ),
            Self::row(
                "",
                "v1",
                "pods",
                "Pod",
                true,
                Some(json!({"phase": "Pending"})),
                true,
                true,
                "pods",
            ),
            Self::row(
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                Some(json!({"phase": "Active"})),
                false,
                true,
                "namespaces",
            ),
            Self::row(
                "",
                "v1",
                "services",
                "Service",
                true,
                Some(json!({"loadBalancer": {}})),
                false,
                true,
                "services/specs",
            ),
            Self::row(
                "",
                "v1",
                "configmaps",
                "ConfigMap",
                true,
                None,
                false,
                false,
                "configmaps",
            ),
            Self::row(
                "", "v1", "secrets", "Secret", true, None, false, false, "secrets",
            ),
            Self::row(
                "",
                "v1",
                "serviceaccounts",
                "ServiceAccount",
                true,
                None,
                false,
                false,
                "serviceaccounts",
            ),
            Self::row(
                "apps",
                "v1",
                "deployments",
                "Deployment",
                true,
                Some(json!({})),
                true,
                false,
                "deployments",
            ),
            Self::row(
                "apps",
                "v1",
                "statefulsets",
                "StatefulSet",
                true,
                Some(json!({"replicas": 0, "availableReplicas": 0})),
                true,
                false,
                "statefulsets",
            ),
            Self::row(
                "apps",
                "v1",
                "replicasets",
                "ReplicaSet",
                true,
                Some(json!({"replicas": 0})),
                true,
                false,
                "replicasets",
            ),
            Self::row(
                "apps",
                "v1",
                "daemonsets",
                "DaemonSet",
                true,
                Some(json!({
                    "currentNumberScheduled": 0,
                    "numberMisscheduled": 0,
                    "desiredNumberScheduled": 0,
                    "numberReady": 0
                })),
                true,
                false,
                "daemonsets",
            ),
            Self::row(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
                Some(json!({
                    "currentHealthy": 0,
                    "desiredHealthy": 0,
                    "disruptionsAllowed": 0,
                    "expectedPods": 0
                })),
                true,
                false,
                "poddisruptionbudgets",
            ),
            Self::row(
                "networking.k8s.io",
                "v1",
                "networkpolicies",
                "NetworkPolicy",
                true,
                None,
                true,
                false,
                "networkpolicies",
            ),
            Self::row(
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "ClusterRole",
                false,
                None,
                false,
                false,
                "clusterroles",
            ),
            Self::row(
                "rbac.authorization.k8s.io",
                "v1",
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
                None,
                false,
                false,
                "clusterrolebindings",
            ),
            Self::row(
                "admissionregistration.k8s.io",
                "v1",
                "validatingwebhookconfigurations",
                "ValidatingWebhookConfiguration",
                false,
                None,
                true,
                false,
                "validatingwebhookconfigurations",
            ),
            Self::row(
                "admissionregistration.k8s.io",
                "v1",
                "mutatingwebhookconfigurations",
                "MutatingWebhookConfiguration",
                false,
                None,
                true,
                false,
                "mutatingwebhookconfigurations",
            ),
            Self::row(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
                Some(json!({"desiredReplicas": 0})),
                true,
                false,
                "horizontalpodautoscalers",
            ),
            Self::row(
                "storage.k8s.io",
                "v1",
                "storageclasses",
                "StorageClass",
                false,
                None,
                false,
                true,
                "storageclasses",
            ),
        ];
        // Nodes register with their status (the create strategy keeps it).
        let mut nodes = Self::row(
            "",
            "v1",
            "nodes",
            "Node",
            false,
            Some(json!({})),
            false,
            false,
            "minions",
        );
        nodes.initial_status = None;
        defs.push(nodes);
        for d in &mut defs {
            if d.group == "apps" && d.plural != "daemonsets" {
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
            &format!("{group}/{plural}"),
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
    fn qualified_resource(&self) -> String {
        qualify(&self.plural, &self.group)
    }

    /// `PersistentVolumeClaim`, `Deployment.apps`.
    fn qualified_kind(&self) -> String {
        qualify(&self.kind, &self.group)
    }

    fn path_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Path of a collection (`ns` ignored for cluster-scoped resources).
    pub fn collection_path(&self, ns: Option<&str>) -> String {
        match ns.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.path_prefix(), self.plural),
            None => format!("{}/{}", self.path_prefix(), self.plural),
        }
    }

    /// Path of an object.
    pub fn object_path(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(ns))
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

// ---------------------------------------------------------------------------------------------
// Errors (Status objects)
// ---------------------------------------------------------------------------------------------

/// An API error: the HTTP code and the `Status` object the server answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub status: Value,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason(), self.message())
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: &str, details: Option<Value>) -> Self {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if reason.is_empty() {
            status.as_object_mut().expect("object").remove("reason");
        }
        if let Some(details) = details {
            status["details"] = details;
        }
        ApiError { code, status }
    }

    pub fn reason(&self) -> &str {
        self.status["reason"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.status["message"].as_str().unwrap_or("")
    }

    /// A Status for an HTTP code, as `fail_next` injects it.
    pub fn for_code(code: u16, message: &str) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        Self::new(code, reason, message, None)
    }

    fn resource_details(def: &ResourceDef, name: &str) -> Value {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), name.into());
        }
        if !def.group.is_empty() {
            d.insert("group".into(), def.group.clone().into());
        }
        d.insert("kind".into(), def.plural.clone().into());
        Value::Object(d)
    }

    fn kind_details(def: &ResourceDef, name: &str) -> Value {
        let mut d = Self::resource_details(def, name);
        d["kind"] = def.kind.clone().into();
        d
    }

    fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", def.qualified_resource()),
            Some(Self::resource_details(def, name)),
        )
    }

    fn already_exists(def: &ResourceDef, name: &str, being_deleted: bool) -> Self {
        let mut message = format!("{} \"{name}\" already exists", def.qualified_resource());
        if being_deleted {
            message = format!("object is being deleted: {message}");
        }
        Self::new(
            409,
            "AlreadyExists",
            &message,
            Some(Self::resource_details(def, name)),
        )
    }

    /// `errors.NewConflict(qualifiedResource, name, err)`.
    fn conflict(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                def.qualified_resource()
            ),
            Some(Self::resource_details(def, name)),
        )
    }

    /// The optimistic-lock conflict of an update with a stale resourceVersion.
    fn stale(def: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// The storage precondition failure of an update whose body names another uid.
    fn uid_storage_precondition(
        def: &ResourceDef,
        key: &str,
        name: &str,
        wanted: &str,
        actual: &str,
    ) -> Self {
        Self::conflict(
            def,
            name,
            &format!(
                "StorageError: invalid object, Code: 4, Key: /registry/{}/{key}, ResourceVersion: 0, \
                 AdditionalErrorMsg: Precondition failed: UID in precondition: {wanted}, UID in object meta: {actual}",
                def.storage_prefix
            ),
        )
    }

    /// `rest.BeforeDelete`'s precondition conflicts (qualified by kind, not resource).
    fn delete_precondition(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                def.qualified_kind()
            ),
            Some(Self::kind_details(def, name)),
        )
    }

    /// `errors.NewInvalid(groupKind, name, fieldErrors)`.
    fn invalid_kind(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        errors: &[FieldError],
    ) -> Self {
        let rendered: Vec<String> = errors.iter().map(FieldError::to_string).collect();
        let aggregate = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut details = Map::new();
        if !name.is_empty() {
            details.insert("name".into(), name.into());
        }
        if !group.is_empty() {
            details.insert("group".into(), group.into());
        }
        details.insert("kind".into(), kind.into());
        details.insert(
            "causes".into(),
            errors
                .iter()
                .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
                .collect(),
        );
        Self::new(
            422,
            "Invalid",
            &format!("{qualified_kind} \"{name}\" is invalid: {aggregate}"),
            Some(Value::Object(details)),
        )
    }

    fn invalid(def: &ResourceDef, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_kind(&def.qualified_kind(), &def.group, &def.kind, name, errors)
    }

    fn invalid_list_options(errors: &[FieldError]) -> Self {
        Self::invalid_kind(
            "ListOptions.meta.k8s.io",
            "meta.k8s.io",
            "ListOptions",
            "",
            errors,
        )
    }

    fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )
    }

    fn unknown_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    fn expired(message: &str) -> Self {
        Self::new(410, "Expired", message, None)
    }

    fn too_large_resource_version(wanted: u64, current: u64) -> Self {
        Self::new(
            504,
            "Timeout",
            &format!("Too large resource version: {wanted}, current: {current}"),
            Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1
            })),
        )
    }
}

/// A `field.Error` of apimachinery.
#[derive(Clone, Debug)]
struct FieldError {
    field: String,
    kind: FieldErrorKind,
    detail: String,
}

#[derive(Clone, Debug)]
enum FieldErrorKind {
    /// Carries the rendered bad value (`"x"` for strings, `-1` for numbers).
    Invalid(String),
    Forbidden,
    Required,
    /// Carries the rendered bad value.
    NotSupported(String),
}

impl FieldError {
    fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value.to_string()),
            detail: detail.into(),
        }
    }

    fn forbidden(field: &str, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    fn required(field: &str, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::NotSupported(_) => "FieldValueNotSupported",
        }
    }

    /// `ErrorBody()`: the message without the field path.
    fn body(&self) -> String {
        match &self.kind {
            FieldErrorKind::Invalid(v) => format!("Invalid value: {v}: {}", self.detail),
            FieldErrorKind::Forbidden => format!("Forbidden: {}", self.detail),
            FieldErrorKind::Required => format!("Required value: {}", self.detail),
            FieldErrorKind::NotSupported(v) => format!("Unsupported value: {v}: {}", self.detail),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

// ---------------------------------------------------------------------------------------------
// Small JSON helpers
// ---------------------------------------------------------------------------------------------

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj.as_object_mut().expect("objects are JSON objects");
    let entry = map.entry("metadata").or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

fn set_meta(obj: &mut Value, key: &str, value: Option<Value>) {
    let m = meta_mut(obj);
    match value {
        Some(v) => {
            m.insert(key.into(), v);
        }
        None => {
            m.remove(key);
        }
    }
}

fn meta_value(obj: &Value, key: &str) -> Option<Value> {
    meta(obj).and_then(|m| m.get(key)).cloned()
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn object_rv(obj: &Value) -> u64 {
    meta_str(obj, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn strip_type_meta(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    obj
}

/// The stored object as the API answers it: with `kind` and `apiVersion`.
fn render(def: &ResourceDef, obj: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), def.kind.clone().into());
    out.insert("apiVersion".into(), def.api_version().into());
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if k != "kind" && k != "apiVersion" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn render_item(def: &ResourceDef, obj: &Value) -> Value {
    if def.items_carry_type_meta {
        render(def, obj)
    } else {
        strip_type_meta(obj.clone())
    }
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: &u8) -> Option<u8> {
        char::from(*b).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push((high << 4) | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded query pairs in order (empty pairs such as kube's leading `&` dropped).
fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

impl LabelReq {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::NotEq(k, v) => labels.get(k) != Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
            LabelReq::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad =
        |why: &str| ApiError::bad_request(&format!("unable to parse requirement: {why}: {s:?}"));
    let key = |k: &str| -> Result<String, ApiError> {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(bad("invalid label key"))
        } else {
            Ok(k.to_string())
        }
    };
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut reqs = Vec::new();
    for term in split_top_level(s) {
        let t = term.trim();
        if t.is_empty() {
            return Err(bad("empty requirement"));
        }
        let req = if let Some(rest) = t.strip_prefix('!') {
            LabelReq::NotExists(key(rest)?)
        } else if let Some(open) = t.find('(') {
            let inner = t[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| bad("missing ')'"))?;
            let mut head = t[..open].split_whitespace();
            let (k, op) = (
                head.next().ok_or_else(|| bad("missing key"))?,
                head.next().unwrap_or(""),
            );
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            if values.iter().any(String::is_empty) {
                return Err(bad("empty value in set"));
            }
            match op {
                "in" => LabelReq::In(key(k)?, values),
                "notin" => LabelReq::NotIn(key(k)?, values),
                _ => return Err(bad("unknown set operator")),
            }
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelReq::NotEq(key(k)?, v.trim().into())
        } else if let Some((k, v)) = t.split_once("==") {
            LabelReq::Eq(key(k)?, v.trim().into())
        } else if let Some((k, v)) = t.split_once('=') {
            LabelReq::Eq(key(k)?, v.trim().into())
        } else if let Some((k, v)) = t.split_once('>') {
            LabelReq::Gt(
                key(k)?,
                v.trim().parse().map_err(|_| bad("not an integer"))?,
            )
        } else if let Some((k, v)) = t.split_once('<') {
            LabelReq::Lt(
                key(k)?,
                v.trim().parse().map_err(|_| bad("not an integer"))?,
            )
        } else {
            LabelReq::Exists(key(t)?)
        };
        reqs.push(req);
    }
    Ok(reqs)
}

#[derive(Clone, Debug)]
struct FieldReq {
    /// `metadata.name` or `metadata.namespace`.
    field: &'static str,
    equal: bool,
    value: String,
}

fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, ApiError> {
    let mut reqs = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, true)
        } else {
            return Err(ApiError::bad_request(&format!(
                "invalid selector: '{s}'; can't understand '{term}'"
            )));
        };
        let field = match field.trim() {
            "metadata.name" => "name",
            "metadata.namespace" => "namespace",
            other => {
                return Err(ApiError::bad_request(&format!(
                    "field label not supported: {other}"
                )));
            }
        };
        reqs.push(FieldReq {
            field,
            equal,
            value: value.trim().to_string(),
        });
    }
    Ok(reqs)
}

/// What a list or watch selects: namespace, labels, fields.
#[derive(Clone, Debug, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn from_query(
        namespace: Option<&str>,
        name: Option<&str>,
        q: &Query,
    ) -> Result<Self, ApiError> {
        let mut fields = parse_field_selector(q.get("fieldSelector").unwrap_or(""))?;
        if let Some(name) = name {
            fields.push(FieldReq {
                field: "name",
                equal: true,
                value: name.into(),
            });
        }
        Ok(Filter {
            namespace: namespace.map(String::from),
            labels: parse_label_selector(q.get("labelSelector").unwrap_or(""))?,
            fields,
        })
    }

    /// No label or field selector (the namespace of the URL does not count).
    fn selects_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, obj: &Value) -> bool {
        let ns = meta_str(obj, "namespace").unwrap_or("");
        if self.namespace.as_deref().is_some_and(|want| want != ns) {
            return false;
        }
        let name = meta_str(obj, "name").unwrap_or("");
        let fields_ok = self.fields.iter().all(|f| {
            let actual = if f.field == "name" { name } else { ns };
            (actual == f.value) == f.equal
        });
        if !fields_ok {
            return false;
        }
        let labels = labels(obj);
        self.labels.iter().all(|r| r.matches(&labels))
    }
}

/// Decoded query parameters (last value wins).
struct Query(HashMap<String, String>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(parse_bool).unwrap_or(false)
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// Watch event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed write, as hooks and subscribers see it.
#[derive(Clone, Debug)]
pub struct WriteEvent {
    pub event_type: EventType,
    /// The resourceVersion of the write.
    pub resource_version: u64,
    pub group: String,
    pub version: String,
    /// Plural resource name, e.g. `persistentvolumeclaims`.
    pub resource: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The object after the write (with kind/apiVersion); for `Deleted` its last state.
    pub object: Value,
    /// The object before the write (`None` for `Added`).
    pub old_object: Option<Value>,
}

impl WriteEvent {
    /// The object's API path, usable with the direct store helpers.
    pub fn path(&self) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match &self.namespace {
            Some(ns) => format!("{prefix}/namespaces/{ns}/{}/{}", self.resource, self.name),
            None => format!("{prefix}/{}/{}", self.resource, self.name),
        }
    }
}

/// Outcome of a delete.
#[derive(Clone, Debug, PartialEq)]
pub enum Deletion {
    /// Finalizers keep the object; it now carries `deletionTimestamp`.
    Pending(Value),
    /// The object is gone; its last state (with the deletion's resourceVersion).
    Deleted(Value),
}

#[derive(Clone, Debug)]
struct HistoryEntry {
    rv: u64,
    res: usize,
    key: String,
    event_type: EventType,
    /// State after the write; for DELETED the last state with the deletion's resourceVersion.
    object: Value,
    prev: Option<Value>,
}

enum WatchMsg {
    Line(Bytes),
    Break,
}

struct WatchSub {
    id: u64,
    res: usize,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Through HTTP: full API semantics.
    Http,
    /// Direct test helper: keeps status/uid/creationTimestamp as given.
    Direct,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum View {
    Main,
    Status,
    Scale,
}

/// A parsed API path.
#[derive(Clone, Debug)]
struct Target {
    res: usize,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// Delete options (from the body and the query).
#[derive(Clone, Debug, Default)]
struct DeleteOpts {
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
    /// `propagationPolicy: Orphan`.
    orphan: bool,
}

/// The fake's storage: objects, history, open watches. Hooks get `&mut Store`.
pub struct Store {
    defs: Vec<Arc<ResourceDef>>,
    rv: u64,
    /// Resource versions below this are expired (410).
    compacted: u64,
    /// Per resource (index into `defs`): etcd-like key (`ns/name` or `name`) -> stored object
    /// (without kind/apiVersion).
    objects: Vec<BTreeMap<String, Value>>,
    history: Vec<HistoryEntry>,
    watchers: Vec<WatchSub>,
    pending: VecDeque<WriteEvent>,
    rng: u64,
    next_watch_id: u64,
    watch_count_tx: watch::Sender<usize>,
}

impl Store {
    fn new(watch_count_tx: watch::Sender<usize>) -> Self {
        let defs: Vec<Arc<ResourceDef>> =
            ResourceDef::builtin().into_iter().map(Arc::new).collect();
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Store {
            objects: vec![BTreeMap::new(); defs.len()],
            defs,
            rv: 1,
            compacted: 0,
            history: Vec::new(),
            watchers: Vec::new(),
            pending: VecDeque::new(),
            rng: hasher.finish() | 1,
            next_watch_id: 1,
            watch_count_tx,
        }
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn add_resource(&mut self, def: ResourceDef) {
        if let Some(i) = self.defs.iter().position(|d| {
            d.group == def.group && d.version == def.version && d.plural == def.plural
        }) {
            self.defs[i] = Arc::new(def);
        } else {
            self.defs.push(Arc::new(def));
            self.objects.push(BTreeMap::new());
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn new_uid(&mut self) -> String {
        let (a, b) = (self.next_rand(), self.next_rand());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 | (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    fn generated_name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[(self.next_rand() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    // ---- paths ----

    fn find_def(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.defs
            .iter()
            .position(|d| d.group == group && d.version == version && d.plural == plural)
    }

    fn parse_path(&self, path: &str) -> Result<Target, ApiError> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(ApiError::unknown_resource()),
        };
        let namespaced = match rest {
            ["namespaces", ns, plural, tail @ ..] => self
                .find_def(group, version, plural)
                .filter(|&i| self.defs[i].namespaced)
                .map(|i| (i, Some(ns.to_string()), tail)),
            _ => None,
        };
        let (res, namespace, tail) = match namespaced {
            Some(found) => found,
            None => match rest {
                [plural, tail @ ..] => {
                    let i = self
                        .find_def(group, version, plural)
                        .ok_or_else(ApiError::unknown_resource)?;
                    if self.defs[i].namespaced && !tail.is_empty() {
                        return Err(ApiError::unknown_resource());
                    }
                    (i, None, tail)
                }
                [] => return Err(ApiError::unknown_resource()),
            },
        };
        let (name, sub) = match tail {
            [] => (None, None),
            [name] => (Some(name.to_string()), None),
            [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
            _ => return Err(ApiError::unknown_resource()),
        };
        let def = &self.defs[res];
        match sub.as_deref() {
            None => {}
            Some("status") if def.status_subresource => {}
            Some("scale") if def.scale_subresource => {}
            Some(_) => return Err(ApiError::unknown_resource()),
        }
        Ok(Target {
            res,
            namespace,
            name,
            sub,
        })
    }

    fn key(def: &ResourceDef, ns: Option<&str>, name: &str) -> String {
        match ns.filter(|_| def.namespaced) {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        }
    }

    fn key_of(def: &ResourceDef, obj: &Value) -> String {
        Self::key(
            def,
            meta_str(obj, "namespace"),
            meta_str(obj, "name").unwrap_or(""),
        )
    }

    /// What the garbage collector does for `propagationPolicy: Orphan`: the owner reference to
    /// `uid` is removed from every object of the namespace (before the owner goes).
    fn orphan_dependents(&mut self, namespace: Option<&str>, uid: &str) {
        for res in 0..self.objects.len() {
            let owned: Vec<(String, Value)> = self.objects[res]
                .iter()
                .filter(|(_, o)| namespace.is_none() || meta_str(o, "namespace") == namespace)
                .filter(|(_, o)| {
                    meta_value(o, "ownerReferences").is_some_and(|refs| {
                        refs.as_array()
                            .is_some_and(|r| r.iter().any(|r| r["uid"] == uid))
                    })
                })
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            for (key, old) in owned {
                let mut obj = old.clone();
                let refs: Vec<Value> = meta_value(&obj, "ownerReferences")
                    .and_then(|refs| refs.as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| r["uid"] != uid)
                    .collect();
                let refs = (!refs.is_empty()).then(|| Value::from(refs));
                set_meta(&mut obj, "ownerReferences", refs);
                self.commit(res, key, EventType::Modified, obj, Some(old));
            }
        }
    }

    // ---- commits and watch fan-out ----

    fn commit(
        &mut self,
        res: usize,
        key: String,
        event_type: EventType,
        mut obj: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        set_meta(&mut obj, "resourceVersion", Some(rv.to_string().into()));
        match event_type {
            EventType::Deleted => {
                self.objects[res].remove(&key);
            }
            _ => {
                self.objects[res].insert(key.clone(), obj.clone());
            }
        }
        let entry = HistoryEntry {
            rv,
            res,
            key,
            event_type,
            object: obj.clone(),
            prev,
        };
        self.dispatch(&entry);
        let def = self.defs[res].clone();
        self.pending.push_back(WriteEvent {
            event_type,
            resource_version: rv,
            group: def.group.clone(),
            version: def.version.clone(),
            resource: def.plural.clone(),
            kind: def.kind.clone(),
            namespace: meta_str(&obj, "namespace")
                .filter(|_| def.namespaced)
                .map(String::from),
            name: meta_str(&obj, "name").unwrap_or("").to_string(),
            object: render(&def, &obj),
            old_object: entry.prev.as_ref().map(|p| render(&def, p)),
        });
        self.history.push(entry);
        obj
    }

    /// The watch event line a watch with `filter` gets for `entry`, if any.
    fn event_line(def: &ResourceDef, filter: &Filter, entry: &HistoryEntry) -> Option<Bytes> {
        let now = filter.matches(&entry.object);
        let before = entry.prev.as_ref().is_some_and(|p| filter.matches(p));
        let (event_type, object) = match entry.event_type {
            EventType::Added if now => (EventType::Added, entry.object.clone()),
            EventType::Deleted if now => (EventType::Deleted, entry.object.clone()),
            EventType::Modified if now && before => (EventType::Modified, entry.object.clone()),
            EventType::Modified if now => (EventType::Added, entry.object.clone()),
            EventType::Modified if before => {
                let mut old = entry.prev.clone().expect("checked");
                set_meta(
                    &mut old,
                    "resourceVersion",
                    Some(entry.rv.to_string().into()),
                );
                (EventType::Deleted, old)
            }
            _ => return None,
        };
        Some(Self::line(event_type.as_str(), render(def, &object)))
    }

    fn line(event_type: &str, object: Value) -> Bytes {
        let mut s = serde_json::to_string(&json!({"type": event_type, "object": object}))
            .expect("serializable");
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark_line(def: &ResourceDef, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
        }
        let mut object =
            json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": metadata});
        for field in &def.bookmark_fields {
            object[field.as_str()] = json!({});
        }
        Self::line("BOOKMARK", object)
    }

    fn dispatch(&mut self, entry: &HistoryEntry) {
        let def = self.defs[entry.res].clone();
        let before = self.watchers.len();
        self.watchers.retain(|w| {
            if w.res != entry.res {
                return !w.tx.is_closed();
            }
            match Self::event_line(&def, &w.filter, entry) {
                Some(line) => w.tx.send(WatchMsg::Line(line)).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        if self.watchers.len() != before {
            self.publish_watch_count();
        }
    }

    fn publish_watch_count(&self) {
        self.watch_count_tx.send_replace(self.watchers.len());
    }

    fn remove_watch(&mut self, id: u64) {
        let before = self.watchers.len();
        self.watchers.retain(|w| w.id != id);
        if self.watchers.len() != before {
            self.publish_watch_count();
        }
    }

    fn bookmark_all(&mut self) {
        let rv = self.rv;
        let defs = self.defs.clone();
        self.watchers.retain(|w| {
            !w.bookmarks
                || w.tx
                    .send(WatchMsg::Line(Self::bookmark_line(&defs[w.res], rv, false)))
                    .is_ok()
        });
        self.publish_watch_count();
    }

    fn break_all(&mut self) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Break);
        }
        self.publish_watch_count();
    }

    fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// The objects of resource `res` as they were at resourceVersion `at` (>= compacted).
    fn state_at(&self, res: usize, at: u64) -> BTreeMap<String, Value> {
        let mut state = self.objects[res].clone();
        for e in self.history.iter().rev().take_while(|e| e.rv > at) {
            if e.res != res {
                continue;
            }
            match e.event_type {
                EventType::Added => {
                    state.remove(&e.key);
                }
                EventType::Modified | EventType::Deleted => {
                    state.insert(
                        e.key.clone(),
                        e.prev
                            .clone()
                            .expect("modified/deleted have a previous state"),
                    );
                }
            }
        }
        state
    }

    // ---- reads ----

    fn get_view(&self, t: &Target) -> Result<Value, ApiError> {
        let def = &self.defs[t.res];
        let name = t.name.as_deref().expect("object path");
        let obj = self.objects[t.res]
            .get(&Self::key(def, t.namespace.as_deref(), name))
            .ok_or_else(|| ApiError::not_found(def, name))?;
        Ok(view_of(def, view_for(t), obj))
    }

    fn list_at(&self, t: &Target, q: &Query) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        let filter = Filter::from_query(t.namespace.as_deref(), None, q)?;
        let limit = match q.get("limit") {
            None | Some("") => 0usize,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(&format!("invalid limit: {l}")))?
                .max(0) as usize,
        };
        let rv_param = q.get("resourceVersion").unwrap_or("");
        let rv_match = q.get("resourceVersionMatch").unwrap_or("");
        let cont = q.get("continue").unwrap_or("");
        let mut errs = Vec::new();
        if !rv_match.is_empty() {
            if rv_param.is_empty() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !cont.is_empty() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            match rv_match {
                "NotOlderThan" => {}
                "Exact" if rv_param == "0" => errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                )),
                "Exact" => {}
                other => errs.push(FieldError {
                    field: "resourceVersionMatch".into(),
                    kind: FieldErrorKind::NotSupported(Value::from(other).to_string()),
                    detail: "supported values: \"Exact\", \"NotOlderThan\"".into(),
                }),
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid_list_options(&errs));
        }

        let prefix = t
            .namespace
            .as_ref()
            .filter(|_| def.namespaced)
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default();
        let (list_rv, start) = if !cont.is_empty() {
            if !rv_param.is_empty() && rv_param != "0" {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (token_rv, start) = decode_continue(cont)?;
            if token_rv < 0 {
                (self.rv, start)
            } else if (token_rv as u64) < self.compacted {
                let mut err = ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a \
                     new list without the continue parameter, or use the continue token in this response to retrieve \
                     the remainder of the results. Continuing with the provided token results in an inconsistent list \
                     - objects that were created, modified, or deleted between the time the first chunk was returned \
                     and now may show up in the list.",
                );
                err.status["metadata"] = json!({"continue": encode_continue(-1, &start)});
                return Err(err);
            } else {
                (token_rv as u64, start)
            }
        } else if rv_param.is_empty() || rv_param == "0" {
            (self.rv, String::new())
        } else {
            let wanted: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(&format!("invalid resource version: {rv_param}"))
            })?;
            if wanted > self.rv {
                return Err(ApiError::too_large_resource_version(wanted, self.rv));
            }
            if rv_match == "Exact" {
                if wanted < self.compacted {
                    return Err(ApiError::expired(
                        "The resourceVersion for the provided list is too old.",
                    ));
                }
                (wanted, String::new())
            } else {
                (self.rv, String::new())
            }
        };

        let snapshot;
        let state = if list_rv == self.rv {
            &self.objects[t.res]
        } else {
            snapshot = self.state_at(t.res, list_rv);
            &snapshot
        };
        let mut items = Vec::new();
        let mut last_key: Option<&str> = None;
        let mut remaining = 0u64;
        let from = format!("{prefix}{start}");
        for (key, obj) in state.range(from..) {
            let Some(rel) = key.strip_prefix(&prefix) else {
                break;
            };
            // The rest of a full page is only counted: without a selector, by key alone (a
            // page of a 100,000-object list then costs its items, not the whole list).
            if limit > 0 && items.len() >= limit && filter.selects_everything() {
                remaining += 1;
                continue;
            }
            if !filter.matches(obj) {
                continue;
            }
            if limit > 0 && items.len() >= limit {
                remaining += 1;
                continue;
            }
            items.push(render_item(&def, obj));
            last_key = Some(rel);
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if remaining > 0 {
            let last = last_key.expect("a full page has a last key");
            metadata["continue"] = encode_continue(list_rv as i64, &format!("{last}\u{0}")).into();
            if filter.selects_everything() {
                metadata["remainingItemCount"] = remaining.into();
            }
        }
        Ok(json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    // ---- watch ----

    fn start_watch(
        &mut self,
        t: &Target,
        q: &Query,
    ) -> Result<(u64, mpsc::UnboundedReceiver<WatchMsg>), ApiError> {
        let def = self.defs[t.res].clone();
        let filter = Filter::from_query(t.namespace.as_deref(), t.name.as_deref(), q)?;
        let rv_param = q.get("resourceVersion").unwrap_or("");
        let rv_match = q.get("resourceVersionMatch").unwrap_or("");
        let bookmarks = q.flag("allowWatchBookmarks");
        let send_initial = q
            .get("sendInitialEvents")
            .map(|v| parse_bool(v).unwrap_or(false));
        let mut errs = Vec::new();
        match send_initial {
            Some(true) => {
                if rv_match != "NotOlderThan" {
                    errs.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    ));
                }
                if !bookmarks {
                    errs.push(FieldError::forbidden(
                        "allowWatchBookmarks",
                        "sendInitialEvents requires setting allowWatchBookmarks to true",
                    ));
                }
            }
            _ if !rv_match.is_empty() => errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            )),
            _ => {}
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid_list_options(&errs));
        }
        let wanted: u64 = if rv_param.is_empty() {
            0
        } else {
            rv_param.parse().map_err(|_| {
                ApiError::bad_request(&format!("invalid resource version: {rv_param}"))
            })?
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_watch_id;
        self.next_watch_id += 1;

        let initial_state = send_initial.unwrap_or(wanted == 0);
        if wanted > self.rv {
            let err = ApiError::too_large_resource_version(wanted, self.rv);
            let _ = tx.send(WatchMsg::Line(Self::line("ERROR", err.status)));
            return Ok((id, rx));
        }
        if initial_state {
            let prefix = t
                .namespace
                .as_ref()
                .filter(|_| def.namespaced)
                .map(|ns| format!("{ns}/"));
            for (key, obj) in &self.objects[t.res] {
                if prefix
                    .as_ref()
                    .is_some_and(|p| !key.starts_with(p.as_str()))
                    || !filter.matches(obj)
                {
                    continue;
                }
                let _ = tx.send(WatchMsg::Line(Self::line("ADDED", render(&def, obj))));
            }
            if send_initial == Some(true) {
                let _ = tx.send(WatchMsg::Line(Self::bookmark_line(&def, self.rv, true)));
            }
        } else if wanted > 0 {
            if wanted < self.compacted {
                let err = ApiError::expired(&format!(
                    "too old resource version: {wanted} ({})",
                    self.compacted
                ));
                let _ = tx.send(WatchMsg::Line(Self::line("ERROR", err.status)));
                return Ok((id, rx));
            }
            for entry in self
                .history
                .iter()
                .filter(|e| e.res == t.res && e.rv > wanted)
            {
                if let Some(line) = Self::event_line(&def, &filter, entry) {
                    let _ = tx.send(WatchMsg::Line(line));
                }
            }
        }
        self.watchers.push(WatchSub {
            id,
            res: t.res,
            filter,
            bookmarks,
            tx,
        });
        self.publish_watch_count();
        Ok((id, rx))
    }

    // ---- writes ----

    fn create_at(
        &mut self,
        t: &Target,
        body: Value,
        mode: Mode,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        check_type_meta(&def, &body)?;
        let mut obj = strip_type_meta(body);
        ensure_namespace(&def, t.namespace.as_deref(), &mut obj)?;
        if def.namespaced && meta_str(&obj, "namespace").unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "the server could not find the requested resource: namespace is required",
            ));
        }
        // etcd3 storage refuses a (parsable, non-zero) resourceVersion; the error is not a
        // StatusError, so the client gets a bare 500.
        if mode == Mode::Http && object_rv(&obj) != 0 {
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
                None,
            ));
        }
        set_meta(&mut obj, "resourceVersion", None);
        set_meta(&mut obj, "deletionTimestamp", None);
        set_meta(&mut obj, "deletionGracePeriodSeconds", None);
        set_meta(&mut obj, "selfLink", None);
        let given_name = meta_str(&obj, "name").unwrap_or("").to_string();
        let generate_name = meta_str(&obj, "generateName").unwrap_or("").to_string();
        if given_name.is_empty() && generate_name.is_empty() {
            return Err(ApiError::invalid(
                &def,
                "",
                &[FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        match mode {
            Mode::Http => {
                let uid = self.new_uid();
                set_meta(&mut obj, "uid", Some(uid.into()));
                set_meta(&mut obj, "creationTimestamp", Some(now_rfc3339().into()));
                if def.initial_status == Some(Value::Null) {
                    obj.as_object_mut().expect("object").remove("status");
                } else if let Some(status) = &def.initial_status {
                    let mut status = status.clone();
                    if def.group.is_empty() && def.plural == "persistentvolumes" {
                        status["lastPhaseTransitionTime"] = now_rfc3339().into();
                    }
                    obj["status"] = status;
                }
                if def.generation {
                    set_meta(&mut obj, "generation", Some(1.into()));
                }
            }
            Mode::Direct => {
                if meta_str(&obj, "uid").unwrap_or("").is_empty() {
                    let uid = self.new_uid();
                    set_meta(&mut obj, "uid", Some(uid.into()));
                }
                if meta_str(&obj, "creationTimestamp").unwrap_or("").is_empty() {
                    set_meta(&mut obj, "creationTimestamp", Some(now_rfc3339().into()));
                }
                if def.generation && meta_value(&obj, "generation").is_none() {
                    set_meta(&mut obj, "generation", Some(1.into()));
                }
            }
        }
        if def.scale_subresource {
            let spec = obj
                .as_object_mut()
                .expect("object")
                .entry("spec")
                .or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.entry("replicas").or_insert(1.into());
            }
        }
        let ns = meta_str(&obj, "namespace").map(String::from);
        let mut name = given_name.clone();
        if name.is_empty() {
            // Like the API server, retry a few times when a generated name is taken.
            for _ in 0..8 {
                name = format!("{generate_name}{}", self.generated_name_suffix());
                if !self.objects[t.res].contains_key(&Self::key(&def, ns.as_deref(), &name)) {
                    break;
                }
            }
        }
        set_meta(&mut obj, "name", Some(name.clone().into()));
        let key = Self::key(&def, ns.as_deref(), &name);
        if let Some(existing) = self.objects[t.res].get(&key) {
            return Err(ApiError::already_exists(
                &def,
                &name,
                meta_value(existing, "deletionTimestamp").is_some(),
            ));
        }
        if dry_run {
            return Ok(render(&def, &obj));
        }
        let stored = self.commit(t.res, key, EventType::Added, obj, None);
        Ok(render(&def, &stored))
    }

    /// The update pipeline of PUT, PATCH and the direct helpers. `make` turns the current view
    /// (object, or Scale) into the requested one; `uid_precondition` makes a uid in it a storage
    /// precondition (PUT).
    fn update_at(
        &mut self,
        t: &Target,
        mode: Mode,
        dry_run: bool,
        uid_precondition: bool,
        make: &mut dyn FnMut(Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        let view = view_for(t);
        let name = t.name.clone().expect("object path");
        let key = Self::key(&def, t.namespace.as_deref(), &name);
        let existing = self.objects[t.res]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def, &name))?;
        let requested = make(view_of(&def, view, &existing))?;
        if !requested.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        if uid_precondition {
            let wanted = meta_str(&requested, "uid").unwrap_or("");
            let actual = meta_str(&existing, "uid").unwrap_or("");
            if !wanted.is_empty() && wanted != actual {
                return Err(ApiError::uid_storage_precondition(
                    &def, &key, &name, wanted, actual,
                ));
            }
        }
        match view {
            View::Scale => {
                if let Some(kind) = requested.get("kind").and_then(Value::as_str)
                    && kind != "Scale"
                {
                    return Err(ApiError::bad_request(&format!(
                        "expected input object type to be Scale, but {kind}"
                    )));
                }
            }
            _ => check_type_meta(&def, &requested)?,
        }
        let requested_name = meta_str(&requested, "name").unwrap_or("");
        if requested_name != name {
            return Err(ApiError::bad_request(&format!(
                "the name of the object ({requested_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut requested = requested;
        ensure_namespace(&def, t.namespace.as_deref(), &mut requested)?;
        let new_rv = meta_str(&requested, "resourceVersion")
            .unwrap_or("")
            .to_string();

        let mut obj = match view {
            View::Main => {
                let mut obj = strip_type_meta(requested);
                if def.status_subresource && mode == Mode::Http {
                    copy_field(&existing, &mut obj, "status");
                }
                obj
            }
            View::Status => {
                let mut obj = existing.clone();
                copy_field(&requested, &mut obj, "status");
                if let Some(uid) = meta_value(&requested, "uid") {
                    set_meta(&mut obj, "uid", Some(uid));
                }
                obj
            }
            View::Scale => {
                let replicas = requested
                    .pointer("/spec/replicas")
                    .cloned()
                    .unwrap_or(json!(0));
                if replicas.as_i64().is_none_or(|r| r < 0) {
                    return Err(ApiError::invalid_kind(
                        "Scale.autoscaling",
                        "autoscaling",
                        "Scale",
                        &name,
                        &[FieldError::invalid(
                            "spec.replicas",
                            &replicas,
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
                let mut obj = existing.clone();
                let spec = obj
                    .as_object_mut()
                    .expect("object")
                    .entry("spec")
                    .or_insert_with(|| json!({}));
                spec["replicas"] = replicas;
                if let Some(uid) = meta_value(&requested, "uid") {
                    set_meta(&mut obj, "uid", Some(uid));
                }
                obj
            }
        };

        let existing_rv = object_rv(&existing);
        if !new_rv.is_empty() {
            let parsed: u64 = new_rv.parse().map_err(|_| {
                ApiError::bad_request(&format!("invalid resourceVersion: {new_rv}"))
            })?;
            if parsed != existing_rv {
                return Err(ApiError::stale(&def, &name));
            }
        }
        before_update(&def, view, &existing, &mut obj, &name)?;
        set_meta(
            &mut obj,
            "resourceVersion",
            Some(existing_rv.to_string().into()),
        );
        if obj == existing {
            return Ok(view_of(&def, view, &existing));
        }
        if should_delete_during_update(&existing, &obj) {
            if !dry_run {
                self.commit(
                    t.res,
                    key,
                    EventType::Deleted,
                    existing.clone(),
                    Some(existing),
                );
            }
            return Ok(view_of(&def, view, &obj));
        }
        if dry_run {
            return Ok(view_of(&def, view, &obj));
        }
        let stored = self.commit(t.res, key, EventType::Modified, obj, Some(existing));
        Ok(view_of(&def, view, &stored))
    }

    fn delete_at(&mut self, t: &Target, opts: &DeleteOpts) -> Result<Deletion, ApiError> {
        let def = self.defs[t.res].clone();
        let name = t.name.clone().expect("object path");
        let key = Self::key(&def, t.namespace.as_deref(), &name);
        let existing = self.objects[t.res]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def, &name))?;
        let uid = meta_str(&existing, "uid").unwrap_or("").to_string();
        if let Some(wanted) = &opts.uid
            && *wanted != uid
        {
            return Err(ApiError::delete_precondition(
                &def,
                &name,
                &format!(
                    "the UID in the precondition ({wanted}) does not match the UID in record ({uid}). \
                     The object might have been deleted and then recreated"
                ),
            ));
        }
        let rv = meta_str(&existing, "resourceVersion")
            .unwrap_or("")
            .to_string();
        if let Some(wanted) = &opts.resource_version
            && *wanted != rv
        {
            return Err(ApiError::delete_precondition(
                &def,
                &name,
                &format!(
                    "the ResourceVersion in the precondition ({wanted}) does not match the ResourceVersion in \
                     record ({rv}). The object might have been modified"
                ),
            ));
        }
        if !finalizers(&existing).is_empty() {
            let mut obj = existing.clone();
            if meta_value(&obj, "deletionTimestamp").is_none() {
                if let Some(generation) = meta_value(&obj, "generation")
                    .and_then(|g| g.as_i64())
                    .filter(|g| *g > 0)
                {
                    set_meta(&mut obj, "generation", Some((generation + 1).into()));
                }
                set_meta(&mut obj, "deletionTimestamp", Some(now_rfc3339().into()));
            }
            set_meta(&mut obj, "deletionGracePeriodSeconds", Some(0.into()));
            if obj == existing || opts.dry_run {
                return Ok(Deletion::Pending(render(&def, &obj)));
            }
            let stored = self.commit(t.res, key, EventType::Modified, obj, Some(existing));
            return Ok(Deletion::Pending(render(&def, &stored)));
        }
        if opts.dry_run {
            return Ok(Deletion::Deleted(render(&def, &existing)));
        }
        if opts.orphan {
            self.orphan_dependents(t.namespace.as_deref(), &uid);
        }
        let gone = self.commit(
            t.res,
            key,
            EventType::Deleted,
            existing.clone(),
            Some(existing),
        );
        Ok(Deletion::Deleted(render(&def, &gone)))
    }

    // ---- direct helpers (no HTTP; used by tests and hooks) ----

    fn target(&self, path: &str) -> Target {
        self.parse_path(path)
            .unwrap_or_else(|e| panic!("bad fake API path {path:?}: {e}"))
    }

    /// The object at an object path (`/api/v1/namespaces/ns/persistentvolumeclaims/x`), or its
    /// `status`/`scale` view.
    pub fn get(&self, object_path: &str) -> Option<Value> {
        self.get_view(&self.target(object_path)).ok()
    }

    /// All objects of a collection path, in key order.
    pub fn list(&self, collection_path: &str) -> Vec<Value> {
        let t = self.target(collection_path);
        let def = &self.defs[t.res];
        let filter = Filter {
            namespace: t.namespace.clone().filter(|_| def.namespaced),
            ..Filter::default()
        };
        self.objects[t.res]
            .values()
            .filter(|o| filter.matches(o))
            .map(|o| render(def, o))
            .collect()
    }

    /// Creates an object in a collection; keeps `status`, `uid` and `creationTimestamp` as given.
    pub fn create(&mut self, collection_path: &str, obj: Value) -> Result<Value, ApiError> {
        let t = self.target(collection_path);
        assert!(
            t.name.is_none(),
            "create needs a collection path, got {collection_path:?}"
        );
        let mut t = t;
        if t.namespace.is_none() && self.defs[t.res].namespaced {
            t.namespace = meta_str(&obj, "namespace").map(String::from);
        }
        self.create_at(&t, obj, Mode::Direct, false)
    }

    /// Replaces an object (status included; `/status` path: status only); a
    /// `metadata.resourceVersion` in `obj` must be current.
    pub fn put(&mut self, object_path: &str, obj: Value) -> Result<Value, ApiError> {
        let t = self.target(object_path);
        let mut obj = Some(obj);
        self.update_at(&t, Mode::Direct, false, true, &mut |_| {
            Ok(obj.take().expect("called once"))
        })
    }

    /// Applies a JSON merge patch (RFC 7386) to an object, status included.
    pub fn patch(&mut self, object_path: &str, merge_patch: Value) -> Result<Value, ApiError> {
        let t = self.target(object_path);
        self.update_at(&t, Mode::Direct, false, false, &mut |mut current| {
            json_patch::merge(&mut current, &merge_patch);
            Ok(current)
        })
    }

    /// Deletes an object (finalizers honoured).
    pub fn delete(&mut self, object_path: &str) -> Result<Deletion, ApiError> {
        let t = self.target(object_path);
        self.delete_at(&t, &DeleteOpts::default())
    }
}

fn view_for(t: &Target) -> View {
    match t.sub.as_deref() {
        Some("status") => View::Status,
        Some("scale") => View::Scale,
        _ => View::Main,
    }
}

fn view_of(def: &ResourceDef, view: View, obj: &Value) -> Value {
    match view {
        View::Main | View::Status => render(def, obj),
        View::Scale => scale_of(obj),
    }
}

fn copy_field(from: &Value, to: &mut Value, field: &str) {
    let to = to.as_object_mut().expect("object");
    match from.get(field) {
        Some(v) => {
            to.insert(field.into(), v.clone());
        }
        None => {
            to.remove(field);
        }
    }
}

fn check_type_meta(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != def.kind
    {
        return Err(ApiError::bad_request(&format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            def.kind
        )));
    }
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str)
        && api_version != def.api_version()
    {
        return Err(ApiError::bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            def.api_version()
        )));
    }
    Ok(())
}

/// `rest.EnsureObjectNamespaceMatchesRequestNamespace`.
fn ensure_namespace(
    def: &ResourceDef,
    url_ns: Option<&str>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let expected = url_ns.filter(|_| def.namespaced).unwrap_or("");
    let actual = meta_str(obj, "namespace").unwrap_or("").to_string();
    if actual == expected {
        return Ok(());
    }
    if actual.is_empty() || expected.is_empty() {
        set_meta(
            obj,
            "namespace",
            (!expected.is_empty()).then(|| expected.into()),
        );
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the namespace of the provided object does not match the namespace sent on the request",
    ))
}

/// `rest.BeforeUpdate` and the strategies' `PrepareForUpdate`.
fn before_update(
    def: &ResourceDef,
    view: View,
    existing: &Value,
    obj: &mut Value,
    name: &str,
) -> Result<(), ApiError> {
    let old_uid = meta_str(existing, "uid").unwrap_or("").to_string();
    match meta_str(obj, "uid").unwrap_or("") {
        "" => set_meta(obj, "uid", Some(old_uid.into())),
        uid if uid != old_uid => {
            let value = Value::from(uid);
            return Err(ApiError::invalid(
                def,
                name,
                &[FieldError::invalid(
                    "metadata.uid",
                    &value,
                    "field is immutable",
                )],
            ));
        }
        _ => {}
    }
    for field in ["creationTimestamp", "deletionTimestamp"] {
        set_meta(obj, field, meta_value(existing, field));
    }
    set_meta(
        obj,
        "deletionGracePeriodSeconds",
        meta_value(existing, "deletionGracePeriodSeconds"),
    );
    let mut generation = meta_value(existing, "generation");
    if def.generation && view != View::Status && obj.get("spec") != existing.get("spec") {
        generation = Some((generation.and_then(|g| g.as_i64()).unwrap_or(0) + 1).into());
    }
    set_meta(obj, "generation", generation);
    if meta_value(existing, "deletionTimestamp").is_some() {
        let old = finalizers(existing);
        let added: Vec<String> = finalizers(obj)
            .into_iter()
            .filter(|f| !old.contains(f))
            .collect();
        if !added.is_empty() {
            let list = added
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::invalid(
                def,
                name,
                &[FieldError::forbidden(
                    "metadata.finalizers",
                    &format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"
                    ),
                )],
            ));
        }
    }
    Ok(())
}

/// `registry.ShouldDeleteDuringUpdate`.
fn should_delete_during_update(existing: &Value, obj: &Value) -> bool {
    finalizers(obj).is_empty()
        && meta_value(existing, "deletionTimestamp").is_some()
        && meta_value(existing, "deletionGracePeriodSeconds")
            .and_then(|g| g.as_i64())
            .unwrap_or(0)
            == 0
}

/// The `autoscaling/v1` `Scale` of a workload.
fn scale_of(obj: &Value) -> Value {
    let mut metadata = Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta_value(obj, field) {
            metadata.insert(field.into(), v);
        }
    }
    let mut spec = Map::new();
    if let Some(r) = obj
        .pointer("/spec/replicas")
        .filter(|r| r.as_i64() != Some(0))
    {
        spec.insert("replicas".into(), r.clone());
    }
    let mut status = Map::new();
    status.insert(
        "replicas".into(),
        obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
    );
    let selector = obj
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    if !selector.is_empty() {
        status.insert("selector".into(), selector.into());
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// `metav1.LabelSelectorAsSelector(sel).String()`.
fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let rendered = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                _ => continue,
            };
            reqs.push((key, rendered));
        }
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

/// The continue token of a real API server (`storage.EncodeContinue`).
fn encode_continue(rv: i64, start: &str) -> String {
    let json = format!(
        r#"{{"v":"meta.k8s.io/v1","rv":{rv},"start":{}}}"#,
        serde_json::to_string(start).expect("string")
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let invalid = |why: &str| ApiError::bad_request(&format!("continue key is not valid: {why}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| invalid("illegal base64 data"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| invalid("not JSON"))?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("encoded start key empty"))?;
    if start.starts_with('/') || start.contains("..") {
        return Err(invalid("path traversal attempt"));
    }
    let rv = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|rv| *rv != 0)
        .ok_or_else(|| invalid("incorrect encoded start resourceVersion"))?;
    Ok((rv, start.to_string()))
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

type Hook = Arc<dyn Fn(&mut Store, &WriteEvent) + Send + Sync>;

struct Shared {
    store: Mutex<Store>,
    hooks: Mutex<Vec<Hook>>,
    events_tx: broadcast::Sender<WriteEvent>,
    rv_tx: watch::Sender<u64>,
    watch_count_rx: watch::Receiver<usize>,
    requests: Mutex<Vec<String>>,
    /// (remaining, HTTP code) of injected failures.
    fail: Mutex<(u32, u16)>,
    /// Path prefixes answered 403, as RBAC does for a user without the right.
    forbidden: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Runs `f` on the store, then the write hooks for every write it (and they) made, then
    /// publishes the writes.
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = lock(&self.store);
        let out = f(&mut store);
        self.drain(&mut store);
        out
    }

    fn drain(&self, store: &mut Store) {
        let mut handled = 0u32;
        while let Some(event) = store.pending.pop_front() {
            handled += 1;
            assert!(
                handled < 100_000,
                "fake apiserver: on_write hooks keep writing (endless loop?)"
            );
            let _ = self.events_tx.send(event.clone());
            let hooks: Vec<Hook> = lock(&self.hooks).clone();
            for hook in hooks {
                hook(store, &event);
            }
        }
        self.rv_tx.send_replace(store.rv);
    }
}

/// Removes a watch from the store when its response stream is dropped.
struct WatchGuard {
    shared: Weak<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.store).remove_watch(self.id);
        }
    }
}

/// A fake API server on `127.0.0.1`, see the module documentation.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.break_watches();
    }
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start() -> Self {
        let (watch_count_tx, watch_count_rx) = watch::channel(0usize);
        let store = Store::new(watch_count_tx);
        let (rv_tx, _) = watch::channel(store.rv);
        let (events_tx, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            hooks: Mutex::new(Vec::new()),
            events_tx,
            rv_tx,
            watch_count_rx,
            requests: Mutex::new(Vec::new()),
            fail: Mutex::new((0, 0)),
            forbidden: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApiServer { addr, shared, task }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A real `kube::Client` talking to this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("valid URL"));
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("kube client for the fake apiserver")
    }

    /// Adds (or replaces) a resource in the table, e.g. [`ResourceDef::custom`].
    pub fn add_resource(&self, def: ResourceDef) {
        lock(&self.shared.store).add_resource(def);
    }

    /// Loads a real list response (e.g. `api_fixture("list-persistentvolumes.json")`) served at
    /// `collection_path` (e.g. `/api/v1/persistentvolumes`). Items keep their uids and
    /// resourceVersions; the global resourceVersion moves to at least the list's and every
    /// item's. Seeding is not a write: no watch events, no hooks, and the history before it is
    /// compacted (a watch from an older resourceVersion gets 410 and relists). Returns the number
    /// of items.
    pub fn seed_list_fixture(&self, collection_path: &str, list_json: &str) -> usize {
        let list: Value = serde_json::from_str(list_json).expect("list fixture is JSON");
        let mut store = lock(&self.shared.store);
        let t = store.target(collection_path);
        let def = store.defs[t.res].clone();
        assert_eq!(
            list["kind"].as_str(),
            Some(format!("{}List", def.kind).as_str()),
            "fixture kind does not match {collection_path}"
        );
        let mut max_rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0u64);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let mut prepared = Vec::new();
        for item in items {
            let mut obj = strip_type_meta(item);
            if def.namespaced && meta_str(&obj, "namespace").is_none() {
                let ns = t
                    .namespace
                    .clone()
                    .expect("items without namespace need a namespaced collection path");
                set_meta(&mut obj, "namespace", Some(ns.into()));
            }
            if meta_str(&obj, "uid").is_none() {
                let uid = store.new_uid();
                set_meta(&mut obj, "uid", Some(uid.into()));
            }
            if meta_str(&obj, "creationTimestamp").is_none() {
                set_meta(&mut obj, "creationTimestamp", Some(now_rfc3339().into()));
            }
            max_rv = max_rv.max(object_rv(&obj));
            prepared.push(obj);
        }
        store.rv = store.rv.max(max_rv);
        let count = prepared.len();
        for mut obj in prepared {
            if object_rv(&obj) == 0 {
                store.rv += 1;
                set_meta(
                    &mut obj,
                    "resourceVersion",
                    Some(store.rv.to_string().into()),
                );
            }
            let key = Store::key_of(&def, &obj);
            store.objects[t.res].insert(key, obj);
        }
        store.compact();
        self.shared.rv_tx.send_replace(store.rv);
        count
    }

    /// Direct access to the store (writes made in `f` run hooks and reach watches).
    /// Do not call other `FakeApiServer` methods from `f`.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        self.shared.with_store(f)
    }

    /// See [`Store::get`].
    pub fn get(&self, object_path: &str) -> Option<Value> {
        lock(&self.shared.store).get(object_path)
    }

    /// See [`Store::list`].
    pub fn list(&self, collection_path: &str) -> Vec<Value> {
        lock(&self.shared.store).list(collection_path)
    }

    /// See [`Store::create`].
    pub fn create(&self, collection_path: &str, obj: Value) -> Result<Value, ApiError> {
        self.with_store(|s| s.create(collection_path, obj))
    }

    /// See [`Store::put`].
    pub fn put(&self, object_path: &str, obj: Value) -> Result<Value, ApiError> {
        self.with_store(|s| s.put(object_path, obj))
    }

    /// See [`Store::patch`].
    pub fn patch(&self, object_path: &str, merge_patch: Value) -> Result<Value, ApiError> {
        self.with_store(|s| s.patch(object_path, merge_patch))
    }

    /// See [`Store::delete`].
    pub fn delete(&self, object_path: &str) -> Result<Deletion, ApiError> {
        self.with_store(|s| s.delete(object_path))
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv
    }

    /// Everything before the current resourceVersion expires: watches and continue tokens
    /// from an older resourceVersion get 410, exact lists at one too.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Sends a BOOKMARK with the current resourceVersion to every open watch that allows them.
    pub fn bookmark(&self) {
        lock(&self.shared.store).bookmark_all();
    }

    /// Ends every open watch abruptly (the connection drops mid-stream).
    pub fn break_watches(&self) {
        lock(&self.shared.store).break_all();
    }

    /// The next `n` requests answer a `Status` with HTTP `code` (and its usual reason), without
    /// `Retry-After`. Note that kube's client retries 429, 503 and 504 itself (up to 15 times).
    pub fn fail_next(&self, n: u32, code: u16) {
        *lock(&self.shared.fail) = (n, code);
    }

    /// From now on, answers every request whose path starts with `path_prefix` with 403
    /// Forbidden, as the API server does when RBAC does not allow it.
    pub fn forbid(&self, path_prefix: &str) {
        lock(&self.shared.forbidden).push(path_prefix.to_owned());
    }

    /// Requests so far, as `METHOD /path?decoded&query` (empty query pairs dropped).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Runs `hook` after every write (HTTP or direct, including writes of hooks), under the store
    /// lock, with the store to read and write. Use it to emulate controllers.
    pub fn on_write(&self, hook: impl Fn(&mut Store, &WriteEvent) + Send + Sync + 'static) {
        lock(&self.shared.hooks).push(Arc::new(hook));
    }

    /// Every committed write, in order (buffer of 4096).
    pub fn subscribe(&self) -> broadcast::Receiver<WriteEvent> {
        self.shared.events_tx.subscribe()
    }

    /// The global resourceVersion, updated after every write.
    pub fn resource_version_rx(&self) -> watch::Receiver<u64> {
        self.shared.rv_tx.subscribe()
    }

    /// The number of open watches.
    pub fn open_watches_rx(&self) -> watch::Receiver<usize> {
        self.shared.watch_count_rx.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn json_response(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).expect("serializable")));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response {
    let mut resp = json_response(err.code, &err.status);
    if let Some(secs) = err
        .status
        .pointer("/details/retryAfterSeconds")
        .and_then(Value::as_u64)
    {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = parse_query(uri.query());
    let logged_query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut entry = format!("{method} {}", uri.path());
    if !logged_query.is_empty() {
        entry.push('?');
        entry.push_str(&logged_query.join("&"));
    }
    lock(&shared.requests).push(entry);
    {
        let mut fail = lock(&shared.fail);
        if fail.0 > 0 {
            fail.0 -= 1;
            return error_response(&ApiError::for_code(
                fail.1,
                "injected failure (fake apiserver)",
            ));
        }
    }
    if lock(&shared.forbidden)
        .iter()
        .any(|prefix| uri.path().starts_with(prefix.as_str()))
    {
        return error_response(&ApiError::for_code(
            403,
            &format!(
                "{method} {} is forbidden: the user cannot do this (fake apiserver)",
                uri.path()
            ),
        ));
    }
    if method == Method::GET
        && let Some(document) = discovery(&lock(&shared.store).defs, uri.path())
    {
        return json_response(200, &document);
    }
    let q = Query(pairs.into_iter().collect());
    match serve(&shared, &method, uri.path(), &q, &headers, &body) {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Watch(id, rx, timeout)) => watch_response(&shared, id, rx, timeout),
        Err(err) => error_response(&err),
    }
}

/// Applies a patch document to the current object.
type PatchFn = Box<dyn Fn(&mut Value) -> Result<(), ApiError>>;

enum Reply {
    Json(u16, Value),
    Watch(u64, mpsc::UnboundedReceiver<WatchMsg>, Duration),
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("the object provided is not valid JSON: {e}")))
}

/// The server's version: the minor the fixtures were captured from.
const VERSION_MAJOR: &str = "1";
const VERSION_MINOR: &str = "35";

/// Legacy discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`), built
/// from the resource table, as client-go's discovery and helm read it. None for other paths.
fn discovery(defs: &[Arc<ResourceDef>], path: &str) -> Option<Value> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Each named group with its versions, in table order (the first one preferred).
    let groups = || {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for d in defs.iter().filter(|d| !d.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, versions)) if versions.contains(&d.version.as_str()) => {}
                Some((_, versions)) => versions.push(&d.version),
                None => groups.push((&d.group, vec![&d.version])),
            }
        }
        groups
    };
    let resources = |group: &str, version: &str| -> Option<Value> {
        let mut list = Vec::new();
        for d in defs
            .iter()
            .filter(|d| d.group == group && d.version == version)
        {
            list.push(json!({
                "name": d.plural, "singularName": d.kind.to_lowercase(), "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            }));
            if d.status_subresource {
                list.push(json!({"name": format!("{}/status", d.plural), "singularName": "",
                    "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"]}));
            }
            if d.scale_subresource {
                list.push(
                    json!({"name": format!("{}/scale", d.plural), "singularName": "",
                    "namespaced": d.namespaced, "group": "autoscaling", "version": "v1",
                    "kind": "Scale", "verbs": ["get", "patch", "update"]}),
                );
            }
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        (!list.is_empty()).then(|| {
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                   "groupVersion": group_version, "resources": list})
        })
    };
    match segments.as_slice() {
        ["version"] => Some(json!({
            "major": VERSION_MAJOR, "minor": VERSION_MINOR,
            "gitVersion": format!("v{VERSION_MAJOR}.{VERSION_MINOR}.0"),
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
            "platform": "linux/amd64"
        })),
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]})),
        ["apis"] => Some(json!({"kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups().into_iter().map(|(g, versions)| {
                let versions: Vec<Value> = versions.iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "preferredVersion": versions[0], "versions": versions})
            }).collect::<Vec<_>>()})),
        ["api", version] => resources("", version),
        ["apis", group, version] => resources(group, version),
        _ => None,
    }
}

fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let t = lock(&shared.store).parse_path(path)?;
    let is_watch = q.flag("watch");
    let dry_run = q.dry_run();
    match (method.as_str(), t.name.is_some(), t.sub.is_some()) {
        ("GET", _, false) if is_watch => {
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_WATCH_TIMEOUT);
            let (id, rx) = lock(&shared.store).start_watch(&t, q)?;
            Ok(Reply::Watch(id, rx, timeout))
        }
        ("GET", false, _) => Ok(Reply::Json(200, lock(&shared.store).list_at(&t, q)?)),
        ("GET", true, _) => Ok(Reply::Json(200, lock(&shared.store).get_view(&t)?)),
        ("POST", false, false) => {
            if t.namespace.is_none() && lock(&shared.store).defs[t.res].namespaced {
                return Err(ApiError::method_not_allowed());
            }
            let obj = parse_body(body)?;
            let created = shared.with_store(|s| s.create_at(&t, obj, Mode::Http, dry_run))?;
            Ok(Reply::Json(201, created))
        }
        ("PUT", true, _) => {
            let mut obj = Some(parse_body(body)?);
            let updated = shared.with_store(|s| {
                s.update_at(&t, Mode::Http, dry_run, true, &mut |_| {
                    Ok(obj.take().expect("called once"))
                })
            })?;
            Ok(Reply::Json(200, updated))
        }
        ("PATCH", true, _) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let apply: PatchFn = match content_type.as_str() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    let patch = parse_body(body)?;
                    Box::new(move |doc| {
                        json_patch::merge(doc, &patch);
                        Ok(())
                    })
                }
                "application/json-patch+json" => {
                    let patch: json_patch::Patch = serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(&e.to_string()))?;
                    Box::new(move |doc| {
                        json_patch::patch(doc, &patch).map_err(|e| {
                            ApiError::new(
                                422,
                                "Invalid",
                                "the server rejected our request due to an error in our request",
                                Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": e.to_string()}]})),
                            )
                        })
                    })
                }
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        &format!(
                            "the body of the request was in an unknown format - accepted media types include: \
                             application/json-patch+json, application/merge-patch+json, \
                             application/strategic-merge-patch+json (the fake apiserver does not implement {other:?})"
                        ),
                        None,
                    ));
                }
            };
            let updated = shared.with_store(|s| {
                s.update_at(&t, Mode::Http, dry_run, false, &mut |mut current| {
                    apply(&mut current)?;
                    Ok(current)
                })
            })?;
            Ok(Reply::Json(200, updated))
        }
        ("DELETE", true, false) => {
            let opts = delete_opts(q, body)?;
            let def = lock(&shared.store).defs[t.res].clone();
            match shared.with_store(|s| s.delete_at(&t, &opts))? {
                Deletion::Pending(obj) => Ok(Reply::Json(200, obj)),
                Deletion::Deleted(obj) if def.return_deleted_object => Ok(Reply::Json(200, obj)),
                Deletion::Deleted(obj) => {
                    let mut details =
                        ApiError::resource_details(&def, meta_str(&obj, "name").unwrap_or(""));
                    details["uid"] = meta_value(&obj, "uid").unwrap_or(Value::Null);
                    Ok(Reply::Json(
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                    ))
                }
            }
        }
        ("DELETE", false, false) => {
            if t.namespace.is_none() && lock(&shared.store).defs[t.res].namespaced {
                return Err(ApiError::method_not_allowed());
            }
            let opts = delete_opts(q, body)?;
            let list = shared.with_store(|s| -> Result<Value, ApiError> {
                let list = s.list_at(&t, &Query(HashMap::new()))?;
                let filter = Filter::from_query(t.namespace.as_deref(), None, q)?;
                let def = s.defs[t.res].clone();
                let mut items = Vec::new();
                let keys: Vec<String> = s.objects[t.res]
                    .iter()
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    let obj = s.objects[t.res][&key].clone();
                    let target = Target {
                        res: t.res,
                        namespace: meta_str(&obj, "namespace").map(String::from),
                        name: meta_str(&obj, "name").map(String::from),
                        sub: None,
                    };
                    let per_object = DeleteOpts {
                        dry_run: opts.dry_run,
                        ..DeleteOpts::default()
                    };
                    s.delete_at(&target, &per_object)?;
                    items.push(render_item(&def, &obj));
                }
                let mut list = list;
                list["items"] = Value::Array(items);
                Ok(list)
            })?;
            Ok(Reply::Json(200, list))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn delete_opts(q: &Query, body: &Bytes) -> Result<DeleteOpts, ApiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body)?
    };
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(q.get("propagationPolicy"));
    if let Some(policy) = policy
        && !matches!(policy, "Foreground" | "Background" | "Orphan")
    {
        return Err(ApiError::invalid_kind(
            "DeleteOptions.meta.k8s.io",
            "meta.k8s.io",
            "DeleteOptions",
            "",
            &[FieldError {
                field: "propagationPolicy".into(),
                kind: FieldErrorKind::NotSupported(Value::from(policy).to_string()),
                detail: "supported values: \"Foreground\", \"Background\", \"Orphan\"".into(),
            }],
        ));
    }
    let dry_run = q.dry_run()
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some("All")));
    Ok(DeleteOpts {
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run,
        orphan: policy == Some("Orphan"),
    })
}

fn watch_response(
    shared: &Arc<Shared>,
    id: u64,
    rx: mpsc::UnboundedReceiver<WatchMsg>,
    timeout: Duration,
) -> Response {
    let guard = WatchGuard {
        shared: Arc::downgrade(shared),
        id,
    };
    let deadline = Box::pin(tokio::time::sleep(timeout));
    let stream = futures_util::stream::unfold(Some((rx, deadline, guard)), |state| async move {
        let (mut rx, mut deadline, guard) = state?;
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(WatchMsg::Line(line)) => Some((Ok::<Bytes, std::io::Error>(line), Some((rx, deadline, guard)))),
                Some(WatchMsg::Break) => Some((Err(std::io::Error::other("watch broken by the test")), None)),
                None => None,
            },
            () = &mut deadline => None,
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
