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
//! * Direct helpers `get`/`list`/`create`/`patch`/`delete` (on [`FakeApiServer`], and on
//!   [`Store`] for hooks) take API paths (`/api/v1/namespaces/ns/persistentvolumeclaims/x`,
//!   optionally `/status` or `/scale`) and skip HTTP (no request log, no injected failures), but
//!   are real writes: new resourceVersion, watch events, hooks. Unlike POST they keep `status`,
//!   `uid` and `creationTimestamp` as given; `patch` also changes `status` on the main path.
//!   `metadata.resourceVersion` in a `patch` is a precondition as over HTTP.
//! * [`FakeApiServer::on_write`] hooks run after every write (also writes made by hooks, in
//!   order) under the store lock with `&mut Store`; calling `FakeApiServer` methods from a hook
//!   deadlocks. [`FakeApiServer::subscribe`] (every write), [`FakeApiServer::resource_version_rx`]
//!   and [`FakeApiServer::open_watches_rx`] let tests await changes without sleeping. An open
//!   watch is counted until its stream ends or the server notices the client left.
//! * [`FakeApiServer::compact`], [`FakeApiServer::bookmark`], [`FakeApiServer::break_watches`]
//!   (the connection is cut mid-stream; kube's watcher resumes from its last resourceVersion),
//!   [`FakeApiServer::fail_next`] (note that kube 5's client itself retries 429/503/504),
//!   [`FakeApiServer::forbid`] (403 under a path, as RBAC answers),
//!   [`FakeApiServer::requests`] (`METHOD /path?decoded=query`).
//!
//! # Layout
//!
//! This file holds the [`FakeApiServer`] handle (start, test hooks); `resources.rs` the table of
//! resources it serves, `errors.rs` the `Status` answers, `http.rs` discovery and the routing of
//! a request to the [`Store`] (`store.rs`: objects, resourceVersions, history, watch dispatch),
//! whose reads (get, list pages, watch) are in `reads.rs` and writes in `writes.rs`;
//! `selectors.rs` and `json.rs` hold the small pieces they share.
//!
//! # Implemented
//!
//! * Paths `/api/v1/...` and `/apis/{group}/{version}/...` for the resources of a built-in table
//!   ([`ResourceDef::builtin`]; more with [`FakeApiServer::add_resource`]): collections, objects and
//!   the `status` / `scale` subresources. A namespaced resource listed without a namespace
//!   (`/api/v1/persistentvolumeclaims`) spans all namespaces.
//! * One global resourceVersion counter (like etcd's revision): every write bumps it. A write that
//!   changes nothing (same bytes) is not a write: no new resourceVersion, no watch event.
//! * GET object; GET list with `labelSelector` (`k=v`, `k in (a,b)`, `k`, `!k`: what the tests
//!   and `migrate -l` send), `limit` + `continue`: the real token (unpadded URL-safe base64 of
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
//!   last event or bookmark, relist after 410). Label selectors behave like the watch cache: an
//!   object that stops matching is sent as DELETED (its previous state with the new
//!   resourceVersion), one that starts matching as ADDED.
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
//! * PATCH: `application/merge-patch+json` (RFC 7386) and
//!   `application/strategic-merge-patch+json` **treated as a merge patch** (no list merge keys,
//!   no `$patch` directives: a strategic patch of a list replaces it); other types answer 415. A patched
//!   `metadata.resourceVersion` is a precondition (409 when stale); a patched different
//!   `metadata.uid` is 422 "field is immutable" (as real PATCH has no uid precondition).
//! * DELETE with `DeleteOptions` (body or query): `preconditions.uid` / `.resourceVersion` (409 with
//!   the fixture's message), `dryRun`, `propagationPolicy` (validated), `gracePeriodSeconds`
//!   (accepted). Objects with finalizers get `deletionTimestamp` + `deletionGracePeriodSeconds: 0`
//!   (+ generation bump) and stay (MODIFIED) until an update removes the last finalizer; others
//!   are removed at once (DELETED). The answer is the object for kinds whose registry returns it
//!   (PV, PVC, Pod, Namespace, Service, StorageClass, custom resources), else a `Success` Status.
//! * `/scale` (deployments, statefulsets, replicasets): `autoscaling/v1` `Scale` mapped to
//!   `spec.replicas`, `status.replicas` and the selector string; GET/PUT/PATCH with the same
//!   precondition rules; negative replicas answer 422.
//! * `dryRun=All` on every write.
//! * Legacy discovery built from the resource table: `/version` (1.35), `/api`, `/apis`,
//!   `/api/v1`, `/apis/{group}/{version}` (resources with their `status`/`scale`
//!   subresources), enough for client-go's RESTMapper (helm) and kube's `Discovery`.
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
//! * Field selectors, the label selector operators `==`, `!=`, `notin`, `>`, `<`, and
//!   `sendInitialEvents` / `resourceVersionMatch` on a watch (streaming lists): the product sends
//!   none of them; they answer 400. JSON patch and server-side apply (415), strategic merge
//!   patch semantics (see above), DELETE of a collection (405).
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

mod errors;
mod http;
mod json;
mod reads;
mod resources;
mod selectors;
mod store;
mod writes;

pub use errors::ApiError;
pub use resources::ResourceDef;
pub use store::{Deletion, EventType, Store, WriteEvent};

// The modules share one set of names: each starts with `use super::*`, which brings the imports
// below and the `pub(super)` items of its siblings.
use errors::*;
use http::*;
use json::*;
use selectors::*;
use store::*;
use writes::*;

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

/// How long a watch without `timeoutSeconds` stays open.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Reads `tests/fixtures/api/{name}`.
pub fn api_fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/api")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

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
