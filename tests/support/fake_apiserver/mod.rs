//! An in-process fake Kubernetes API server for tests that drive the real `kube::Client`.
//!
//! It serves plain HTTP on `127.0.0.1:0` (axum) and keeps the API server's semantics for what it
//! implements; response shapes follow the real responses in `tests/fixtures/api/`.
//!
//! ```rust,ignore
//! let server = FakeApiServer::start().await;
//! server.seed_list_fixture("/api/v1/persistentvolumes", &api_fixture("list-persistentvolumes.json"));
//! server.on_write(|store, event| { /* emulate a controller: store.patch(path, ..) */ });
//! let pvs: kube::Api<PersistentVolume> = kube::Api::all(server.client());
//! ```
//!
//! # Test hooks
//!
//! * [`FakeApiServer::seed_list_fixture`] loads a real list response as is (uids and
//!   resourceVersions kept, global counter moved past them, history compacted, no events).
//! * Direct helpers `get`/`list`/`create`/`patch`/`delete` (on [`FakeApiServer`], and on
//!   [`Store`] for hooks) take API paths (`/api/v1/namespaces/ns/persistentvolumeclaims/x`,
//!   optionally `/scale`) and skip HTTP (no request log, no injected failures), but are real
//!   writes: new resourceVersion, watch events, hooks. Unlike POST they keep `status`, `uid` and
//!   `creationTimestamp` as given; `patch` also changes `status`.
//!   `metadata.resourceVersion` in a `patch` is a precondition as over HTTP.
//! * [`FakeApiServer::on_write`] hooks run after every write (also writes made by hooks, in
//!   order) under the store lock with `&mut Store`, before the write is answered; calling
//!   `FakeApiServer` methods from a hook deadlocks. [`FakeApiServer::open_watches_rx`] lets a
//!   test await open watches (e.g. before a bookmark) without sleeping. An open watch is counted
//!   until its stream ends or the server notices the client left.
//! * [`FakeApiServer::compact`], [`FakeApiServer::bookmark`], [`FakeApiServer::break_watches`]
//!   (the connection is cut mid-stream; kube's watcher resumes from its last resourceVersion),
//!   [`FakeApiServer::fail_next`] (note that kube 5's client itself retries 429/503/504),
//!   [`FakeApiServer::forbid`] (403 under a path, as RBAC answers),
//!   [`FakeApiServer::requests`] (`METHOD /path?decoded=query`).
//! * [`FakeApiServer::hold_next`] holds the next request that matches (after the injected
//!   failures) until the test releases it: a test acts at a chosen moment of a client's work
//!   (between its read and its write; in the middle of a paginated list) without sleeping.
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
//! What the product (kube's `Api`, its watcher and `await_condition`, helm's `lookup`) and its
//! tests send; anything else answers 400 rather than being served wrong.
//!
//! * Paths `/api/v1/...` and `/apis/{group}/{version}/...` for the resources of a built-in table
//!   ([`ResourceDef::builtin`]: what the product reads and writes, and the kinds of the chart
//!   for helm; more with [`FakeApiServer::add_resource`]): collections, objects and the `scale`
//!   subresource. A namespaced resource listed without a namespace
//!   (`/api/v1/persistentvolumeclaims`) spans all namespaces.
//! * One global resourceVersion counter (like etcd's revision): every write bumps it. A write that
//!   changes nothing (same bytes) is not a write: no new resourceVersion, no watch event.
//! * GET object; GET list with `labelSelector` `k=v[,k=v]` (what `migrate -l` sends in the
//!   tests), `fieldSelector=metadata.name=NAME` (`await_condition`), `resourceVersion` unset or
//!   `0`, `limit` + `continue`: the real token (unpadded URL-safe base64 of
//!   `{"v":"meta.k8s.io/v1","rv":N,"start":"key\0"}`), etcd key order (`namespace/name`),
//!   `remainingItemCount` when no selector is given. The fake keeps no snapshots: a token from
//!   before the latest write has expired (410, as on a real server once it compacted), with an
//!   "inconsistent" continue token (rv -1) in `metadata.continue` that continues from the
//!   current state. Items of lists carry no `kind`/`apiVersion` (they do for resources added
//!   with [`ResourceDef::custom`], as for CRDs).
//! * WATCH (`watch=true|1` on a collection) from `resourceVersion=N`, as kube's watcher sends it
//!   (list with `limit=500`, watch from the list's resourceVersion, resume from the last event or
//!   bookmark, relist after 410): newline-delimited JSON events sent as chunks, every event after
//!   `N` from the history, then live. Selectors filter by the object's state after each write.
//!   `timeoutSeconds` ends the stream cleanly. A resourceVersion older than the compaction point
//!   gives HTTP 200 with a single `ERROR` event (`Status` 410 `Expired`, "too old resource
//!   version"). Bookmarks only when the test calls [`FakeApiServer::bookmark`], and only to
//!   watches with `allowWatchBookmarks=true`.
//! * POST create: 201; 409 `AlreadyExists` (prefixed "object is being deleted: " when it is);
//!   500 when a resourceVersion is set (as etcd3 storage answers); the server sets `uid`,
//!   `creationTimestamp`, `resourceVersion`, `generation: 1` (kinds that have one), drops
//!   `deletionTimestamp`, and resets `status` for kinds with a status subresource to what the
//!   real strategy leaves (PV, PVC and Pod `phase: Pending`, Namespace `phase: Active`, custom
//!   resources: removed). `spec.replicas` of apps workloads defaults to 1.
//! * PUT replace: 404 when absent; 409 `Conflict` with the fixture's message when
//!   `metadata.resourceVersion` is stale (unset = unconditional update); a non-empty
//!   `metadata.uid` other than the object's is a storage precondition (409 "StorageError:
//!   invalid object ... Precondition failed: UID in precondition"); `status` changes are ignored
//!   for kinds with a status subresource; `generation` is bumped when `spec` changes; name,
//!   namespace, `uid`, `creationTimestamp` and `deletionTimestamp` are kept; removing the last
//!   finalizer of an object being deleted deletes it (DELETED event carries its last stored
//!   state).
//! * PATCH: `application/merge-patch+json` (RFC 7386), the one kube's `Patch::Merge` sends;
//!   other types answer 415. The same rules as PUT (a patched stale resourceVersion is 409).
//! * DELETE with `DeleteOptions` in the body: `preconditions.uid` (409 with the fixture's
//!   message), `propagationPolicy` (accepted). Objects with finalizers get `deletionTimestamp` +
//!   `deletionGracePeriodSeconds: 0` and stay (MODIFIED) until an update removes the last
//!   finalizer; others are removed at once (DELETED). The answer is the object for kinds whose
//!   registry returns it (PV, PVC, Pod, Namespace, Service, StorageClass, custom resources), else
//!   a `Success` Status.
//! * `/scale` (deployments, statefulsets, replicasets): `autoscaling/v1` `Scale` mapped to
//!   `spec.replicas`, `status.replicas` and the selector string (of `matchLabels`); GET/PUT/PATCH
//!   with the same precondition rules.
//! * Legacy discovery built from the resource table: `/version` (1.35), `/api`, `/apis`,
//!   `/api/v1`, `/apis/{group}/{version}` (resources with their `scale` subresources), enough for
//!   client-go's RESTMapper (helm) and kube's `Discovery`.
//!
//! # Not implemented (differences from a real API server)
//!
//! * Answer 400: `dryRun`, `generateName`, lists at a resourceVersion (other than `0`) or with
//!   `resourceVersionMatch`, watches without a resourceVersion or of one object,
//!   `sendInitialEvents`, label selectors other than `k=v`, field selectors other than
//!   `metadata.name=`. JSON patch, strategic merge patch and server-side apply answer 415;
//!   `status` subresources and DELETE of a collection 404/405.
//! * Aggregated discovery and OpenAPI documents, the deprecated `/watch/` path prefix,
//!   protobuf/CBOR/YAML bodies, gzip, table output, `pretty`. Path segments are not
//!   percent-decoded.
//! * Authentication, authorization, admission (no mutating/validating webhooks, no
//!   `NamespaceLifecycle`: creating in a namespace that does not exist succeeds), quotas,
//!   `fieldValidation`, validation and defaulting of specs and metadata (besides `spec.replicas`
//!   = 1 for apps workloads and the status reset on create): e.g. a kind, apiVersion, name or
//!   namespace in a body that does not match the URL is not refused (the URL wins), nor are new
//!   finalizers on an object being deleted; a patched different `metadata.uid` answers 409 like
//!   PUT's precondition, not 422. `managedFields` are stored as sent and never maintained.
//! * Watches: an object that starts or stops matching a label selector is sent as MODIFIED,
//!   or not at all (the watch cache sends ADDED and DELETED); a resourceVersion in the future
//!   is not refused.
//! * Controllers: no garbage collector (`propagationPolicy` is accepted but dependents are never
//!   deleted, no `orphan`/`foregroundDeletion` finalizers are added; `Orphan` removes the owner
//!   reference from the objects of the namespace at once, as the collector would), no namespace
//!   controller (deleting a namespace is an ordinary delete: no `Terminating` phase, contents stay),
//!   no graceful pod deletion (pods go at once, as an unscheduled pod does), no PV binder, no
//!   scheduler. Emulate controllers with [`FakeApiServer::on_write`].
//! * GET with `resourceVersion` is served from the current state.
//! * Bookmark objects carry empty `spec`/`status` like the PV fixture does, not every Go
//!   zero-value field of the kind.
//! * Deleting an object that is already being deleted changes nothing and answers the object
//!   (as for kinds without graceful deletion). Setting `deletionTimestamp` does not bump
//!   `generation`.

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
use tokio::sync::{mpsc, oneshot, watch};

/// How long a watch without `timeoutSeconds` stays open.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Reads `tests/fixtures/api/{name}` (see [`crate::fixtures`]).
pub fn api_fixture(name: &str) -> String {
    String::from_utf8(crate::fixtures::read(&format!("api/{name}")))
        .unwrap_or_else(|e| panic!("tests/fixtures/api/{name} is not UTF-8: {e}"))
}

type Hook = Arc<dyn Fn(&mut Store, &WriteEvent) + Send + Sync>;

/// A request to hold, see [`FakeApiServer::hold_next`].
struct Hold {
    matches: Box<dyn Fn(&str) -> bool + Send + Sync>,
    arrived: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// A request held by [`FakeApiServer::hold_next`]: served when this is released or dropped.
pub struct Held {
    arrived: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl Held {
    /// Waits until the request has arrived (it is held from then on).
    pub async fn arrived(&mut self) {
        if let Some(arrived) = self.arrived.take() {
            arrived.await.expect("the fake API server is running");
        }
    }

    /// Lets the request be served (as dropping this does).
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

struct Shared {
    store: Mutex<Store>,
    hooks: Mutex<Vec<Hook>>,
    watch_count_rx: watch::Receiver<usize>,
    requests: Mutex<Vec<String>>,
    /// (remaining, HTTP code) of injected failures.
    fail: Mutex<(u32, u16)>,
    /// Path prefixes answered 403, as RBAC does for a user without the right.
    forbidden: Mutex<Vec<String>>,
    holds: Mutex<Vec<Hold>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Runs `f` on the store, then the write hooks for every write it (and they) made.
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
            let hooks: Vec<Hook> = lock(&self.hooks).clone();
            for hook in hooks {
                hook(store, &event);
            }
        }
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
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(watch_count_tx)),
            hooks: Mutex::new(Vec::new()),
            watch_count_rx,
            requests: Mutex::new(Vec::new()),
            fail: Mutex::new((0, 0)),
            forbidden: Mutex::new(Vec::new()),
            holds: Mutex::new(Vec::new()),
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
        count
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
        self.shared.with_store(|s| s.create(collection_path, obj))
    }

    /// See [`Store::patch`].
    pub fn patch(&self, object_path: &str, merge_patch: Value) -> Result<Value, ApiError> {
        self.shared
            .with_store(|s| s.patch(object_path, merge_patch))
    }

    /// See [`Store::delete`].
    pub fn delete(&self, object_path: &str) -> Result<Deletion, ApiError> {
        self.shared.with_store(|s| s.delete(object_path))
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

    /// Sends a BOOKMARK with the current resourceVersion to every open watch that allows them;
    /// returns how many got one.
    pub fn bookmark(&self) -> usize {
        lock(&self.shared.store).bookmark_all()
    }

    /// Ends every open watch abruptly (the connection drops mid-stream); returns how many.
    pub fn break_watches(&self) -> usize {
        lock(&self.shared.store).break_all()
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

    /// Holds the next request whose log line (as in [`FakeApiServer::requests`]) `matches`,
    /// once it got past the injected failures: it is served when the returned [`Held`] is
    /// released or dropped. Await [`Held::arrived`] to act while it waits.
    pub fn hold_next(&self, matches: impl Fn(&str) -> bool + Send + Sync + 'static) -> Held {
        let (arrived_tx, arrived_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        lock(&self.shared.holds).push(Hold {
            matches: Box::new(matches),
            arrived: arrived_tx,
            release: release_rx,
        });
        Held {
            arrived: Some(arrived_rx),
            release: release_tx,
        }
    }

    /// The number of open watches.
    pub fn open_watches_rx(&self) -> watch::Receiver<usize> {
        self.shared.watch_count_rx.clone()
    }
}
