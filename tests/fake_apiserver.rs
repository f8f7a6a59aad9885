//! Tests of the in-process fake API server (`tests/support/fake_apiserver.rs`), driven through the
//! real `kube::Client` / `kube::Api` / `kube::runtime::watcher`, and through raw HTTP where kube
//! hides the wire format. Real responses to compare with are in `tests/fixtures/api/`.

use rwop_test_support as support;

use std::future::{Future, poll_fn};
use std::pin::Pin;

use axum::body::HttpBody;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::PATIENCE;
use support::fake_apiserver::{Deletion, EventType, FakeApiServer, ResourceDef, api_fixture};

/// Upper bound for anything a test waits for; reaching it fails the test.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&api_fixture(name)).unwrap()
}

async fn seeded(fixtures: &[(&str, &str)]) -> FakeApiServer {
    let server = FakeApiServer::start().await;
    for (path, file) in fixtures {
        server.seed_list_fixture(path, &api_fixture(file));
    }
    server
}

const PVS: (&str, &str) = ("/api/v1/persistentvolumes", "list-persistentvolumes.json");
const PVCS: (&str, &str) = (
    "/api/v1/persistentvolumeclaims",
    "list-persistentvolumeclaims.json",
);
const NAMESPACES: (&str, &str) = ("/api/v1/namespaces", "list-namespaces.json");
const DEPLOYMENTS: (&str, &str) = (
    "/apis/apps/v1/namespaces/shop/deployments",
    "list-deployments-shop.json",
);

/// One raw request through the kube client's transport: the HTTP code and the JSON body.
async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let resp = within(
        "a raw response",
        client.send(req.body(kube::client::Body::from(bytes)).unwrap()),
    )
    .await
    .unwrap();
    let code = resp.status().as_u16();
    let bytes = within("a raw body", resp.into_body().collect_bytes())
        .await
        .unwrap();
    (
        code,
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON: {e}")),
    )
}

/// The `Status` of a kube API error.
fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Asserts a kube API error carries exactly the Status of a fixture.
fn assert_status_like_fixture(err: kube::Error, fixture: &str) {
    let want = fixture_json(fixture);
    let got = api_status(err);
    assert_eq!(u64::from(got.code), want["code"].as_u64().unwrap());
    assert_eq!(got.reason, want["reason"].as_str().unwrap());
    assert_eq!(got.message, want["message"].as_str().unwrap());
    let details = got.details.expect("details");
    assert_eq!(details.name, want["details"]["name"].as_str().unwrap());
    assert_eq!(details.kind, want["details"]["kind"].as_str().unwrap());
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    items.iter().map(ResourceExt::name_any).collect()
}

/// A raw watch response read line by line.
struct RawWatch {
    body: kube::client::Body,
    buf: Vec<u8>,
}

impl RawWatch {
    async fn open(client: &Client, path: &str) -> Self {
        let req = axum::http::Request::get(path)
            .body(kube::client::Body::empty())
            .unwrap();
        let resp = within("the watch response", client.send(req))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        RawWatch {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next chunk of bytes: `None` at a clean end, `Some(Err)` when the connection broke.
    async fn chunk(&mut self) -> Option<Result<(), String>> {
        let frame = within(
            "watch data",
            poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)),
        )
        .await?;
        Some(match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    self.buf.extend_from_slice(&data);
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        })
    }

    async fn next_event(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            self.chunk()
                .await
                .expect("more events")
                .expect("an intact stream");
        }
    }

    /// Reads to the end: `Ok` for a clean end, `Err` for a broken connection.
    async fn end(&mut self) -> Result<(), String> {
        loop {
            match self.chunk().await {
                None => return Ok(()),
                Some(Ok(())) => assert!(
                    self.buf.is_empty(),
                    "unexpected data: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Some(Err(e)) => return Err(e),
            }
        }
    }
}

type WatcherStream<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

async fn next_item<K>(stream: &mut WatcherStream<K>) -> Result<Event<K>, watcher::Error> {
    within("a watcher event", stream.next())
        .await
        .expect("the watcher stream never ends")
}

/// The next successful watcher event; errors (e.g. of a broken connection) are skipped.
async fn next_ok<K>(stream: &mut WatcherStream<K>) -> Event<K> {
    loop {
        if let Ok(event) = next_item(stream).await {
            return event;
        }
    }
}

/// Asserts Init, InitApply for `expected` (in order), InitDone.
async fn expect_initial_list<K: ResourceExt>(stream: &mut WatcherStream<K>, expected: &[&str]) {
    assert!(
        matches!(next_ok(stream).await, Event::Init),
        "expected Init"
    );
    for name in expected {
        match next_ok(stream).await {
            Event::InitApply(obj) => assert_eq!(obj.name_any(), *name),
            _ => panic!("expected InitApply of {name}"),
        }
    }
    assert!(
        matches!(next_ok(stream).await, Event::InitDone),
        "expected InitDone"
    );
}

const PV_NAMES: [&str; 4] = ["pre-pv-rwo", "pv-bind-rwop", "pv-bind2-rwop", "pv-rwo"];

fn new_pv(name: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOncePod"],
            "hostPath": {"path": format!("/srv/volumes/{name}")}
        }
    }))
    .unwrap()
}

fn new_pvc(name: &str, finalizers: &[&str]) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound"}
    }))
    .unwrap()
}

#[tokio::test]
async fn get_and_list_serve_the_seeded_fixture_as_the_real_server_did() {
    let server = seeded(&[PVS, PVCS, NAMESPACES]).await;
    let client = server.client();

    let (code, list) = raw(&client, "GET", "/api/v1/persistentvolumes", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(list, fixture_json("list-persistentvolumes.json"));

    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get("pv-rwo").await.unwrap();
    assert_eq!(
        pv.metadata.uid.as_deref(),
        Some("d94214bd-9bd1-41c4-afa2-c1622e64b9e6")
    );
    assert_eq!(pv.metadata.resource_version.as_deref(), Some("268"));
    let (_, raw_pv) = raw(
        &client,
        "GET",
        "/api/v1/persistentvolumes/pv-rwo",
        None,
        None,
    )
    .await;
    assert_eq!(
        (raw_pv["kind"].as_str(), raw_pv["apiVersion"].as_str()),
        (Some("PersistentVolume"), Some("v1"))
    );

    let listed = pvs.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), PV_NAMES);
    assert_eq!(listed.metadata.resource_version.as_deref(), Some("413"));

    // A namespaced resource: per namespace, and across namespaces.
    let in_default: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        in_default
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    let everywhere: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let all = everywhere.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 7);
    assert_eq!(
        all.items.last().unwrap().namespace().as_deref(),
        Some("shop")
    );

    // Label selectors.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selected = |selector: &str| ListParams::default().labels(selector);
    assert_eq!(
        names(
            &namespaces
                .list(&selected("rwop-guard.dev/mutate=enabled"))
                .await
                .unwrap()
                .items
        ),
        ["shop"]
    );
    // The one field selector the product sends (await_condition's).
    let one = namespaces
        .list(&ListParams::default().fields("metadata.name=kube-public"))
        .await
        .unwrap();
    let names: Vec<_> = one.items.iter().map(|n| n.metadata.name.clone()).collect();
    assert_eq!(names, [Some("kube-public".to_owned())]);
    // What the fake does not implement answers 400 instead of selecting something else.
    for unimplemented in [
        ListParams::default().fields("status.phase=Active"),
        ListParams::default().labels("rwop-guard.dev/mutate!=enabled"),
        ListParams::default().labels("kubernetes.io/metadata.name notin (shop)"),
        ListParams::default().labels("kubernetes.io/metadata.name in (shop,default)"),
        ListParams::default().labels("!rwop-guard.dev/mutate"),
        ListParams::default().at("413"),
    ] {
        let err = namespaces.list(&unimplemented).await.unwrap_err();
        assert_eq!(api_status(err).code, 400);
    }
}

#[tokio::test]
async fn not_found_is_the_real_status() {
    let server = FakeApiServer::start().await;
    let (code, body) = raw(
        &server.client(),
        "GET",
        "/api/v1/namespaces/default/persistentvolumeclaims/nope",
        None,
        None,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(body, fixture_json("status-404-notfound.json"));

    let (code, body) = raw(
        &server.client(),
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments/gone",
        None,
        None,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(body["message"], "deployments.apps \"gone\" not found");
    assert_eq!(
        body["details"],
        json!({"name": "gone", "group": "apps", "kind": "deployments"})
    );
}

#[tokio::test]
async fn paginated_list_matches_the_real_server_and_a_write_expires_the_token() {
    let server = seeded(&[PVS]).await;
    let client = server.client();

    let (code, page) = raw(
        &client,
        "GET",
        "/api/v1/persistentvolumes?limit=2",
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        page,
        fixture_json("list-persistentvolumes-paged-limit2.json")
    );

    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let first = pvs.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first.items), ["pre-pv-rwo", "pv-bind-rwop"]);
    assert_eq!(first.metadata.remaining_item_count, Some(2));
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(token, page["metadata"]["continue"].as_str().unwrap());

    let second = pvs
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second.items), ["pv-bind2-rwop", "pv-rwo"]);
    assert_eq!(second.metadata.continue_, None);
    assert_eq!(second.metadata.resource_version.as_deref(), Some("413"));

    // After a write the token has expired (410: the fake keeps no snapshots, as a real server
    // once it compacted) and the error offers a token to continue inconsistently.
    server
        .patch(
            "/api/v1/persistentvolumes/pv-rwo",
            json!({"metadata": {"labels": {"tier": "platinum"}}}),
        )
        .unwrap();
    server
        .create(
            "/api/v1/persistentvolumes",
            serde_json::to_value(new_pv("pv-zz")).unwrap(),
        )
        .unwrap();
    let fresh = pvs.list(&ListParams::default()).await.unwrap();
    assert_eq!(fresh.items.len(), 5);
    assert_eq!(fresh.metadata.resource_version.as_deref(), Some("415"));
    let status = api_status(
        pvs.list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status
            .message
            .starts_with("The provided continue parameter is too old"),
        "{}",
        status.message
    );
    let inconsistent = status
        .metadata
        .and_then(|m| m.continue_)
        .expect("an inconsistent continue token");
    let rest = pvs
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(&inconsistent),
        )
        .await
        .unwrap();
    assert_eq!(names(&rest.items), ["pv-bind2-rwop", "pv-rwo", "pv-zz"]);
    assert_eq!(
        rest.items[1].labels().get("tier").map(String::as_str),
        Some("platinum")
    );
}

#[tokio::test]
async fn writes_with_a_stale_resource_version_conflict() {
    let server = seeded(&[PVS]).await;
    let client = server.client();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());

    let stale = pvs.get("pv-rwo").await.unwrap();
    let mut fresh = stale.clone();
    fresh.labels_mut().insert("tier".into(), "platinum".into());
    let replaced = pvs
        .replace("pv-rwo", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.resource_version.as_deref(), Some("414"));
    assert_eq!(replaced.metadata.uid, stale.metadata.uid);

    let err = pvs
        .replace("pv-rwo", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_status_like_fixture(err, "status-409-conflict.json");
    let (code, body) = raw(
        &client,
        "PUT",
        "/api/v1/persistentvolumes/pv-rwo",
        None,
        Some(serde_json::to_value(&stale).unwrap()),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(body, fixture_json("status-409-conflict.json"));

    // A merge patch carrying a stale resourceVersion is a precondition too; a current one passes.
    let stale_patch =
        Patch::Merge(json!({"metadata": {"resourceVersion": "268", "labels": {"tier": "x"}}}));
    let err = pvs
        .patch("pv-rwo", &PatchParams::default(), &stale_patch)
        .await
        .unwrap_err();
    assert_status_like_fixture(err, "status-409-conflict.json");
    let current_patch =
        Patch::Merge(json!({"metadata": {"resourceVersion": "414", "labels": {"tier": "x"}}}));
    let patched = pvs
        .patch("pv-rwo", &PatchParams::default(), &current_patch)
        .await
        .unwrap();
    assert_eq!(patched.metadata.resource_version.as_deref(), Some("415"));

    // An update without resourceVersion is unconditional; one that changes nothing is not a write.
    let mut unconditional = stale.clone();
    unconditional.metadata.resource_version = None;
    let replaced = pvs
        .replace("pv-rwo", &PostParams::default(), &unconditional)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.resource_version.as_deref(), Some("416"));
    let again = pvs
        .replace("pv-rwo", &PostParams::default(), &unconditional)
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version.as_deref(), Some("416"));

    // A PUT naming another uid fails the storage precondition.
    let mut other_uid = replaced.clone();
    other_uid.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let status = api_status(
        pvs.replace("pv-rwo", &PostParams::default(), &other_uid)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.ends_with(
            "Precondition failed: UID in precondition: 00000000-0000-0000-0000-000000000000, \
             UID in object meta: d94214bd-9bd1-41c4-afa2-c1622e64b9e6"
        ),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn unsupported_patch_types_and_uid_patches() {
    let server = seeded(&[PVCS]).await;
    let client = server.client();
    let path = "/api/v1/namespaces/shop/persistentvolumeclaims/orders-db";
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/apply-patch+yaml"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );

    // A patch may not change the uid (the fake answers the storage precondition of a PUT).
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "shop");
    let uid_patch =
        Patch::Merge(json!({"metadata": {"uid": "00000000-0000-0000-0000-000000000000"}}));
    let status = api_status(
        claims
            .patch("orders-db", &PatchParams::default(), &uid_patch)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
}

#[tokio::test]
async fn create_sets_server_fields_and_rejects_duplicates() {
    let server = FakeApiServer::start().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(server.client(), "default");

    let created = claims
        .create(&PostParams::default(), &new_pvc("data", &[]))
        .await
        .unwrap();
    let name = created.name_any();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(
        created
            .metadata
            .uid
            .as_deref()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    // The status a client sends on create is reset by the API server.
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));

    let status = api_status(
        claims
            .create(&PostParams::default(), &new_pvc(&name, &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        status.message,
        format!("persistentvolumeclaims \"{name}\" already exists")
    );

    // A resourceVersion on create is refused by the storage with a bare 500.
    let mut with_rv = new_pvc("with-rv", &[]);
    with_rv.metadata.resource_version = Some("5".into());
    let status = api_status(
        claims
            .create(&PostParams::default(), &with_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            500,
            "resourceVersion should not be set on objects to be created"
        )
    );

    // What the fake does not implement answers 400 instead of writing: dry runs, generateName;
    // so does creating through the cluster-wide path of a namespaced resource.
    let mut generated = new_pvc("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("data-".into());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let all: Api<PersistentVolumeClaim> = Api::all(server.client());
    let before = server.resource_version();
    for refused in [
        claims.create(&dry_run, &new_pvc("dry", &[])).await,
        claims.create(&PostParams::default(), &generated).await,
        all.create(&PostParams::default(), &new_pvc("x", &[])).await,
    ] {
        assert_eq!(api_status(refused.unwrap_err()).code, 400);
    }
    assert_eq!(server.resource_version(), before);
}

#[tokio::test]
async fn delete_with_a_wrong_uid_precondition_conflicts() {
    let server = seeded(&[PVCS]).await;
    let client = server.client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "shop");
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            ..Default::default()
        }),
        ..DeleteParams::default()
    };
    let err = claims.delete("orders-db", &wrong_uid).await.unwrap_err();
    assert_status_like_fixture(err, "status-409-precondition-uid.json");
    let (code, body) = raw(
        &client,
        "DELETE",
        "/api/v1/namespaces/shop/persistentvolumeclaims/orders-db",
        None,
        Some(json!({"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(body, fixture_json("status-409-precondition-uid.json"));

    // The right uid passes; the claim has a finalizer, so it stays, marked for deletion.
    let right_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("b5cdbcad-85bc-4034-9c31-2d2a69f9241d".into()),
            ..Default::default()
        }),
        ..DeleteParams::default()
    };
    let kept = claims
        .delete("orders-db", &right_uid)
        .await
        .unwrap()
        .left()
        .expect("the object, not a Status");
    assert!(kept.metadata.deletion_timestamp.is_some());
}

#[tokio::test]
async fn finalizers_keep_a_deleted_object_until_the_last_one_is_removed() {
    let server = FakeApiServer::start().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(server.client(), "default");
    let created = claims
        .create(
            &PostParams::default(),
            &new_pvc("held", &["example.com/hold"]),
        )
        .await
        .unwrap();
    let rv = created.resource_version().unwrap();
    let mut events = within("a watch", claims.watch(&WatchParams::default(), &rv))
        .await
        .unwrap()
        .boxed();

    let kept = claims
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the object");
    assert!(kept.metadata.deletion_timestamp.is_some());
    assert_eq!(kept.metadata.deletion_grace_period_seconds, Some(0));
    match within("MODIFIED", events.next()).await.unwrap().unwrap() {
        WatchEvent::Modified(obj) => assert!(obj.metadata.deletion_timestamp.is_some()),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    let still_there = claims.get("held").await.unwrap();
    assert_eq!(
        still_there.metadata.deletion_timestamp,
        kept.metadata.deletion_timestamp
    );

    // Deleting again changes nothing.
    let again = claims
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(again.resource_version(), kept.resource_version());

    // Removing the last finalizer deletes it.
    let remove = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    claims
        .patch("held", &PatchParams::default(), &remove)
        .await
        .unwrap();
    match within("DELETED", events.next()).await.unwrap().unwrap() {
        WatchEvent::Deleted(obj) => {
            assert_eq!(
                obj.finalizers(),
                ["example.com/hold"],
                "the DELETED event carries the last stored state"
            );
            assert_eq!(
                obj.resource_version(),
                Some(server.resource_version().to_string())
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert_eq!(api_status(claims.get("held").await.unwrap_err()).code, 404);

    // Without finalizers a delete is immediate and answers the deleted object (PVC) ...
    claims
        .create(&PostParams::default(), &new_pvc("free", &[]))
        .await
        .unwrap();
    let gone = claims
        .delete("free", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the deleted claim");
    assert_eq!(gone.name_any(), "free");
    // ... or a Success Status for resources whose registry does not return it (Deployment).
    let server = seeded(&[DEPLOYMENTS]).await;
    let deployments: Api<Deployment> = Api::namespaced(server.client(), "shop");
    let status = deployments
        .delete("orders", &DeleteParams::background())
        .await
        .unwrap()
        .right()
        .expect("a Status");
    assert_eq!(
        status.details.unwrap().uid,
        "ae6934e3-2541-4e89-b8da-15e09f08f913"
    );
}

#[tokio::test]
async fn scale_subresource_maps_to_spec_replicas() {
    let server = seeded(&[DEPLOYMENTS]).await;
    let client = server.client();
    let (code, scale) = raw(
        &client,
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments/orders/scale",
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(scale, fixture_json("get-deployment-scale.json"));

    let deployments: Api<Deployment> = Api::namespaced(client, "shop");
    let scale: Scale = deployments.get_scale("orders").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        scale.status.as_ref().and_then(|s| s.selector.as_deref()),
        Some("app=orders")
    );

    let scaled = deployments
        .patch_scale(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(3));
    let deployment = deployments.get("orders").await.unwrap();
    assert_eq!(deployment.spec.replicas, Some(3));
    assert_eq!(deployment.metadata.generation, Some(2));
    assert_eq!(
        deployment.metadata.resource_version,
        scaled.metadata.resource_version
    );

    // The Scale's resourceVersion is a precondition.
    let err = deployments
        .replace_scale("orders", &PostParams::default(), &scale)
        .await
        .unwrap_err();
    let status = api_status(err);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status
            .message
            .starts_with("Operation cannot be fulfilled on deployments.apps \"orders\"")
    );

    // Scaling to zero through a replace with the current resourceVersion.
    let mut current = deployments.get_scale("orders").await.unwrap();
    current.spec.as_mut().unwrap().replicas = Some(0);
    let zero = deployments
        .replace_scale("orders", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(
        zero.spec.and_then(|s| s.replicas),
        None,
        "replicas 0 is omitted like the real server does"
    );
    assert_eq!(
        deployments.get("orders").await.unwrap().spec.replicas,
        Some(0)
    );
}

#[tokio::test]
async fn a_put_of_the_main_resource_keeps_the_status() {
    let server = FakeApiServer::start().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(server.client(), "default");
    let created = claims
        .create(&PostParams::default(), &new_pvc("split", &[]))
        .await
        .unwrap();
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    let mut bound = created.clone();
    bound.status.as_mut().unwrap().phase = Some("Bound".into());
    bound.spec.as_mut().unwrap().volume_name = Some("pv-1".into());
    let replaced = claims
        .replace("split", &PostParams::default(), &bound)
        .await
        .unwrap();
    assert_eq!(
        replaced.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending"),
        "status ignored on the main resource"
    );
    assert_eq!(
        replaced.spec.as_ref().unwrap().volume_name.as_deref(),
        Some("pv-1")
    );
}

#[tokio::test]
async fn watcher_lists_then_watches_and_recovers_from_broken_and_expired_watches() {
    let server = seeded(&[PVS]).await;
    let pvs: Api<PersistentVolume> = Api::all(server.client());
    let mut stream: WatcherStream<PersistentVolume> =
        watcher::watcher(pvs.clone(), watcher::Config::default()).boxed();
    expect_initial_list(&mut stream, &PV_NAMES).await;

    // Live changes.
    pvs.create(&PostParams::default(), &new_pv("pv-new"))
        .await
        .unwrap();
    match next_ok(&mut stream).await {
        Event::Apply(pv) => assert_eq!(pv.name_any(), "pv-new"),
        _ => panic!("expected Apply of pv-new"),
    }
    pvs.delete("pv-new", &DeleteParams::default())
        .await
        .unwrap();
    match next_ok(&mut stream).await {
        Event::Delete(pv) => assert_eq!(pv.name_any(), "pv-new"),
        _ => panic!("expected Delete of pv-new"),
    }

    // A broken watch is resumed from the last resourceVersion, without a relist.
    let resume_from = server.resource_version();
    server.break_watches();
    server
        .create(
            "/api/v1/persistentvolumes",
            serde_json::to_value(new_pv("pv-after-break")).unwrap(),
        )
        .unwrap();
    match next_ok(&mut stream).await {
        Event::Apply(pv) => assert_eq!(pv.name_any(), "pv-after-break"),
        _ => panic!("expected Apply of pv-after-break, not a relist"),
    }
    let requests = server.requests();
    assert!(
        requests.iter().any(
            |r| r.starts_with("GET /api/v1/persistentvolumes?watch=true")
                && r.contains(&format!("resourceVersion={resume_from}"))
        ),
        "{requests:#?}"
    );

    // A write the PV watch does not see, then compaction: resuming gets 410 and relists.
    let namespaces: Api<Namespace> = Api::all(server.client());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    server.compact();
    server.break_watches();
    loop {
        match next_item(&mut stream).await {
            Err(watcher::Error::WatchError(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
                break;
            }
            Err(_) => continue,
            Ok(_) => panic!("expected the 410 of the expired resourceVersion first"),
        }
    }
    let mut after = PV_NAMES.to_vec();
    after.insert(1, "pv-after-break");
    expect_initial_list(&mut stream, &after).await;
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.as_str() == "GET /api/v1/persistentvolumes?limit=500")
        .count();
    assert_eq!(lists, 2);

    // And it keeps watching.
    server
        .patch(
            "/api/v1/persistentvolumes/pv-rwo",
            json!({"metadata": {"labels": {"seen": "yes"}}}),
        )
        .unwrap();
    match next_ok(&mut stream).await {
        Event::Apply(pv) => assert_eq!(pv.labels().get("seen").map(String::as_str), Some("yes")),
        _ => panic!("expected Apply of pv-rwo"),
    }
}

#[tokio::test]
async fn raw_watch_gets_history_bookmarks_and_expiry() {
    let server = seeded(&[PVS]).await;
    let pvs: Api<PersistentVolume> = Api::all(server.client());

    // From a resourceVersion: the history after it (filtered by the label selector), then live
    // events and bookmarks on request.
    let rv = server.resource_version().to_string();
    for (name, tier) in [
        ("pv-rwo", "gold"),
        ("pv-rwo", "silver"),
        ("pv-bind-rwop", "gold"),
    ] {
        server
            .patch(
                &format!("/api/v1/persistentvolumes/{name}"),
                json!({"metadata": {"labels": {"tier": tier}}}),
            )
            .unwrap();
    }
    let gold = WatchParams::default().labels("tier=gold");
    let mut history = pvs.watch(&gold, &rv).await.unwrap().boxed();
    for (name, rv) in [("pv-rwo", "414"), ("pv-bind-rwop", "416")] {
        match within("MODIFIED", history.next()).await {
            Some(Ok(WatchEvent::Modified(pv))) => {
                assert_eq!(
                    (pv.name_any().as_str(), pv.resource_version().as_deref()),
                    (name, Some(rv))
                )
            }
            other => panic!("expected MODIFIED of {name}, got {other:?}"),
        }
    }
    server.bookmark();
    match within("BOOKMARK", history.next()).await {
        Some(Ok(WatchEvent::Bookmark(bookmark))) => {
            assert_eq!(bookmark.metadata.resource_version, "416");
            assert!(bookmark.metadata.annotations.is_empty());
        }
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }

    // A watch without a resourceVersion (kube's watcher always lists first) answers 400.
    let Err(err) = pvs.watch(&WatchParams::default(), "0").await else {
        panic!("expected a 400");
    };
    assert_eq!(api_status(err).code, 400);

    // From an expired resourceVersion: HTTP 200 with one ERROR event (410), then the end.
    server.compact();
    let mut expired = pvs
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match within("ERROR", expired.next()).await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    assert!(
        within("the end of the stream", expired.next())
            .await
            .is_none()
    );
}

#[tokio::test]
async fn watch_events_on_the_wire_match_the_real_server() {
    let server = seeded(&[PVS]).await;
    let recorded: Vec<Value> = api_fixture("watch-persistentvolumes.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut watch = RawWatch::open(
        &server.client(),
        "/api/v1/persistentvolumes?watch=1&resourceVersion=413&allowWatchBookmarks=true",
    )
    .await;
    // Replay the recorded writes; managedFields are not maintained by the fake, so the patch sets them.
    for event in &recorded[..2] {
        let obj = &event["object"];
        let patch = json!({
            "metadata": {"labels": obj["metadata"]["labels"], "managedFields": obj["metadata"]["managedFields"]},
            "spec": {"accessModes": obj["spec"]["accessModes"]}
        });
        server
            .patch("/api/v1/persistentvolumes/pv-rwo", patch)
            .unwrap();
        assert_eq!(watch.next_event().await, *event);
    }
    server.bookmark();
    assert_eq!(watch.next_event().await, recorded[2]);
    // break_watches cuts the connection mid-stream ...
    server.break_watches();
    assert!(
        watch.end().await.is_err(),
        "a broken watch is not a clean end"
    );
    // ... while timeoutSeconds ends it cleanly.
    let mut short = RawWatch::open(
        &server.client(),
        "/api/v1/persistentvolumes?watch=true&resourceVersion=415&timeoutSeconds=1",
    )
    .await;
    assert_eq!(short.end().await, Ok(()));
}

#[tokio::test]
async fn injected_failures_and_the_request_log() {
    let server = seeded(&[PVS]).await;
    let pvs: Api<PersistentVolume> = Api::all(server.client());
    server.fail_next(2, 500);
    for _ in 0..2 {
        let status = api_status(pvs.get("pv-rwo").await.unwrap_err());
        assert_eq!(
            (status.code, status.reason.as_str()),
            (500, "InternalError")
        );
    }
    pvs.get("pv-rwo").await.unwrap();
    // kube's client retries a 503 by itself.
    server.fail_next(1, 503);
    pvs.list(&ListParams::default().labels("tier=gold"))
        .await
        .unwrap();
    assert_eq!(
        server.requests(),
        [
            "GET /api/v1/persistentvolumes/pv-rwo",
            "GET /api/v1/persistentvolumes/pv-rwo",
            "GET /api/v1/persistentvolumes/pv-rwo",
            "GET /api/v1/persistentvolumes?labelSelector=tier=gold",
            "GET /api/v1/persistentvolumes?labelSelector=tier=gold",
        ]
    );
}

#[tokio::test]
async fn write_hooks_emulate_controllers() {
    let server = FakeApiServer::start().await;
    // A tiny "PV controller": binds every new claim.
    server.on_write(|store, event| {
        if event.resource == "persistentvolumeclaims" && event.event_type == EventType::Added {
            let ns = event.namespace.as_deref().unwrap();
            store
                .patch(
                    &format!(
                        "/api/v1/namespaces/{ns}/persistentvolumeclaims/{}",
                        event.name
                    ),
                    json!({"status": {"phase": "Bound"}}),
                )
                .unwrap();
        }
    });
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(server.client(), "default");
    let created = claims
        .create(&PostParams::default(), &new_pvc("bind-me", &[]))
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    // Hooks run before the write is answered.
    let bound = server
        .get("/api/v1/namespaces/default/persistentvolumeclaims/bind-me")
        .unwrap();
    assert_eq!(bound["status"]["phase"], "Bound");

    // Direct helpers run the hooks too and reach watches.
    let mut open = server.open_watches_rx();
    let mut events = claims
        .watch(
            &WatchParams::default(),
            &server.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    within("an open watch", open.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    let mut direct = serde_json::to_value(new_pvc("direct", &[])).unwrap();
    direct["status"] = json!({"phase": "Pending"}); // direct creates keep the status as given
    server
        .create("/api/v1/namespaces/default/persistentvolumeclaims", direct)
        .unwrap();
    assert!(
        matches!(within("ADDED", events.next()).await, Some(Ok(WatchEvent::Added(p))) if p.name_any() == "direct")
    );
    match within("MODIFIED", events.next()).await {
        Some(Ok(WatchEvent::Modified(p))) => {
            assert_eq!(p.status.unwrap().phase.as_deref(), Some("Bound"))
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match server
        .delete("/api/v1/namespaces/default/persistentvolumeclaims/direct")
        .unwrap()
    {
        Deletion::Deleted(obj) => assert_eq!(obj["metadata"]["name"], "direct"),
        Deletion::Pending(_) => panic!("no finalizers, deleted at once"),
    }
}

#[tokio::test]
async fn discovery_lists_the_resource_table_as_kube_reads_it() {
    let fake = FakeApiServer::start().await;
    fake.add_resource(ResourceDef::custom(
        "keda.sh",
        "v1alpha1",
        "scaledobjects",
        "ScaledObject",
        true,
    ));
    let discovery = within("discovery", kube::Discovery::new(fake.client()).run())
        .await
        .unwrap();
    let find = |group: &str, kind: &str| {
        discovery
            .groups()
            .find(|g| g.name() == group)
            .and_then(|g| g.recommended_kind(kind))
    };
    let (pv, caps) = find("", "PersistentVolume").expect("core/v1 PersistentVolume");
    assert_eq!(pv.plural, "persistentvolumes");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    let (deploy, caps) = find("apps", "Deployment").expect("apps/v1 Deployment");
    assert_eq!(deploy.version, "v1");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "scale"));
    let (so, _) = find("keda.sh", "ScaledObject").expect("added resources are discovered");
    assert_eq!(so.api_version, "keda.sh/v1alpha1");
    assert!(find("apps", "CronTab").is_none());

    let version = within("version", fake.client().apiserver_version())
        .await
        .unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "35")
    );
}
