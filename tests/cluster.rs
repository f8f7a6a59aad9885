//! The cluster watch caches against the in-process fake API server, through the real
//! `kube::Client`: initial list (paginated), live changes, bookmarks, 410 Gone → relist, broken
//! watches, readiness, and mutation decisions made from the live facts.

use rwop_test_support as support;

use std::sync::Arc;

use rwop_guard::admission::{Webhook, review};
use rwop_guard::cluster::{self, ClusterWatch};
use rwop_guard::policy::{AccessMode, Facts, Policy};
use rwop_guard::server::AppState;
use serde_json::{Value, json};
use support::PATIENCE;
use support::fake_apiserver::{FakeApiServer, Held, api_fixture};
use tokio::sync::watch;

const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";
const VOLUMES: &str = "/api/v1/persistentvolumes";
const NAMESPACES: &str = "/api/v1/namespaces";

/// Deletes a PV the way the cluster does: the pv-protection finalizer holds it until the PV
/// controller releases it.
fn delete_volume(fake: &FakeApiServer, name: &str) {
    let path = format!("{VOLUMES}/{name}");
    fake.delete(&path).unwrap();
    assert!(fake.get(&path).is_some(), "held by its finalizer");
    fake.patch(&path, json!({"metadata": {"finalizers": null}}))
        .unwrap();
    assert!(fake.get(&path).is_none());
}

async fn seeded() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.seed_list_fixture(CLASSES, &api_fixture("list-storageclasses.json"));
    fake.seed_list_fixture(VOLUMES, &api_fixture("list-persistentvolumes.json"));
    fake.seed_list_fixture(NAMESPACES, &api_fixture("list-namespaces.json"));
    fake
}

struct Running {
    state: Arc<AppState>,
    watch: ClusterWatch,
    published: watch::Receiver<Arc<Facts>>,
}

fn start_caches(fake: &FakeApiServer) -> Running {
    let watch = cluster::start(fake.client());
    let state = Arc::new(AppState::with_cluster(Policy::default(), watch.feed()));
    let published = watch.feed().facts;
    Running {
        state,
        watch,
        published,
    }
}

impl Running {
    /// Waits until a snapshot satisfying `ok` is published.
    async fn until(&mut self, what: &str, ok: impl Fn(&AppState) -> bool) {
        let state = self.state.clone();
        tokio::time::timeout(PATIENCE, async {
            while !ok(&state) {
                self.published.changed().await.expect("watch alive");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
    }

    fn class_provisioner(&self, name: &str) -> Option<String> {
        let facts = self.state.facts();
        facts
            .cluster
            .as_ref()?
            .storage_classes
            .get(name)
            .map(|c| c.provisioner.clone())
    }

    fn volume_modes(&self, name: &str) -> Option<String> {
        let facts = self.state.facts();
        facts
            .cluster
            .as_ref()?
            .volumes
            .get(name)
            .map(|m| m.to_string())
    }
}

/// The default class in the published facts.
fn default_class(state: &AppState) -> Option<String> {
    state
        .facts()
        .cluster
        .as_ref()?
        .default_storage_class
        .clone()
}

fn synced(state: &AppState) -> bool {
    state.facts_ready()
}

/// Ready as the probes see it: the caches synced, not shutting down.
fn ready(state: &AppState) -> bool {
    state.not_ready_reason().is_none()
}

/// The volumes of the published facts.
fn volumes(state: &AppState) -> rwop_guard::policy::ByName<rwop_guard::policy::AccessModes> {
    let facts = state.facts();
    facts
        .cluster
        .as_ref()
        .expect("the facts are known")
        .volumes
        .clone()
}

/// `rwop_guard_watch_errors_total` over all resources.
fn watch_errors(state: &AppState) -> u64 {
    state
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("rwop_guard_watch_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the fake holds `held`'s request.
async fn arrived(held: &mut Held, what: &str) {
    tokio::time::timeout(PATIENCE, held.arrived())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Sets label `team` of namespace `default` (to a value it did not have) and waits until the
/// published facts show it: a publication after this moment, whatever the other watches do.
async fn publish_namespace_label(fake: &FakeApiServer, r: &mut Running, team: &str) {
    fake.patch(
        &format!("{NAMESPACES}/default"),
        json!({"metadata": {"labels": {"team": team}}}),
    )
    .unwrap();
    r.until("the namespace label", |s| {
        s.facts()
            .cluster
            .as_ref()
            .and_then(|c| c.namespaces.get("default")?.get("team").cloned())
            .as_deref()
            == Some(team)
    })
    .await;
}

#[tokio::test]
async fn initial_sync_builds_the_facts_and_makes_ready() {
    let fake = seeded().await;
    let mut r = start_caches(&fake);
    assert_eq!(
        r.state.not_ready_reason(),
        Some("cluster caches have not synced yet")
    );
    assert!(
        r.state.facts().cluster.is_none(),
        "facts unknown before the sync"
    );
    r.until("first sync", synced).await;
    assert_eq!(r.state.not_ready_reason(), None);

    assert_eq!(default_class(&r.state).as_deref(), Some("fast-csi"));
    assert_eq!(
        r.class_provisioner("fast-csi").as_deref(),
        Some("ebs.csi.aws.com")
    );
    assert_eq!(
        r.class_provisioner("local-disks").as_deref(),
        Some("kubernetes.io/no-provisioner")
    );
    assert_eq!(
        r.volume_modes("pv-bind-rwop").as_deref(),
        Some("[ReadWriteOncePod]")
    );
    assert_eq!(r.volume_modes("pv-rwo").as_deref(), Some("[ReadWriteMany]"));
    let facts = r.state.facts();
    let cluster = facts.cluster.as_ref().unwrap();
    assert_eq!(cluster.volumes.len(), 4);
    assert_eq!(
        cluster
            .namespaces
            .get("shop")
            .and_then(|l| l.get("rwop-guard.dev/mutate"))
            .map(String::as_str),
        Some("enabled")
    );
    let metrics = r.state.metrics.encode();
    for resource in ["storageclasses", "persistentvolumes", "namespaces"] {
        assert!(
            metrics.contains(&format!(
                "rwop_guard_cache_synced{{resource=\"{resource}\"}} 1"
            )),
            "{metrics}"
        );
    }
    drop(r.watch);
}

fn pv(name: &str, modes: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"accessModes": modes, "capacity": {"storage": "1Gi"},
                 "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": name}}
    })
}

#[tokio::test]
async fn large_lists_are_read_in_pages() {
    let fake = seeded().await;
    // More volumes than one page of the default watcher (500).
    for i in 0..620 {
        fake.create(VOLUMES, pv(&format!("bulk-{i:04}"), &["ReadWriteOnce"]))
            .unwrap();
    }
    let mut r = start_caches(&fake);
    r.until("first sync", synced).await;
    assert_eq!(r.state.facts().cluster.as_ref().unwrap().volumes.len(), 624);
    let lists: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|q| q.starts_with("GET /api/v1/persistentvolumes?") && !q.contains("watch"))
        .collect();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(lists[0].contains("limit=500"), "{lists:?}");
    assert!(lists[1].contains("continue="), "{lists:?}");
}

#[tokio::test]
async fn live_changes_reach_the_facts() {
    let fake = seeded().await;
    let mut r = start_caches(&fake);
    r.until("first sync", synced).await;

    // A new default class, newer than fast-csi: it becomes the default.
    fake.create(
        CLASSES,
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "newer", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "pd.csi.storage.gke.io"
        }),
    )
    .unwrap();
    r.until("new default class", |s| {
        default_class(s).as_deref() == Some("newer")
    })
    .await;

    // A PV's modes change; a PV is deleted.
    fake.patch(
        &format!("{VOLUMES}/pre-pv-rwo"),
        json!({"spec": {"accessModes": ["ReadWriteOncePod"]}}),
    )
    .unwrap();
    delete_volume(&fake, "pv-rwo");
    r.until("PV changes", |s| {
        let f = s.facts();
        let c = f.cluster.as_ref().unwrap();
        c.volumes
            .get("pre-pv-rwo")
            .is_some_and(|m| m.is_only(AccessMode::ReadWriteOncePod))
            && !c.volumes.contains_key("pv-rwo")
    })
    .await;

    // Namespace labels.
    fake.patch(
        &format!("{NAMESPACES}/default"),
        json!({"metadata": {"labels": {"team": "a"}}}),
    )
    .unwrap();
    r.until("namespace labels", |s| {
        s.facts().cluster.as_ref().unwrap().namespaces["default"]
            .get("team")
            .map(String::as_str)
            == Some("a")
    })
    .await;

    // Removing the newer default falls back to fast-csi.
    fake.delete(&format!("{CLASSES}/newer")).unwrap();
    r.until("default falls back", |s| {
        default_class(s).as_deref() == Some("fast-csi")
    })
    .await;
}

/// The caches' watches (classes, volumes, namespaces, claims, and six workload kinds), once all
/// are open on the fake: what the test does to watches next reaches them.
const WATCHES: usize = 10;

async fn watches_open(fake: &FakeApiServer) {
    let mut open = fake.open_watches_rx();
    tokio::time::timeout(PATIENCE, open.wait_for(|n| *n >= WATCHES))
        .await
        .expect("the caches open their watches")
        .unwrap();
}

#[tokio::test]
async fn bookmarks_keep_the_watch_going_without_a_relist() {
    let fake = seeded().await;
    let mut r = start_caches(&fake);
    r.until("first sync", synced).await;
    watches_open(&fake).await;
    let lists_before = count_lists(&fake);
    assert_eq!(fake.bookmark(), WATCHES, "every watch asks for bookmarks");
    fake.create(VOLUMES, pv("after-bookmark", &["ReadWriteOncePod"]))
        .unwrap();
    r.until("event after the bookmark", |s| {
        s.facts()
            .cluster
            .as_ref()
            .unwrap()
            .volumes
            .contains_key("after-bookmark")
    })
    .await;
    assert_eq!(
        count_lists(&fake),
        lists_before,
        "a bookmark must not cause a relist"
    );
}

fn count_lists(fake: &FakeApiServer) -> usize {
    fake.requests()
        .iter()
        .filter(|q| q.starts_with("GET /") && !q.contains("watch=true"))
        .count()
}

#[tokio::test]
async fn gone_410_relists_and_swaps_the_state_in_whole() {
    let fake = seeded().await;
    // Two pages of volumes, so a relist can be caught half done.
    for i in 0..600 {
        fake.create(VOLUMES, pv(&format!("bulk-{i:04}"), &["ReadWriteOnce"]))
            .unwrap();
    }
    let mut r = start_caches(&fake);
    r.until("first sync", synced).await;
    watches_open(&fake).await;
    let lists_before = count_lists(&fake);
    let before = volumes(&r.state);
    assert_eq!(before.len(), 604);

    // The second page of the volumes' relist waits until the test lets it through.
    let mut second_page = fake.hold_next(|request| {
        request.starts_with("GET /api/v1/persistentvolumes?") && request.contains("continue=")
    });
    // While the watches are down and history is compacted, the cluster changes: a volume that
    // sorts into the first page appears, one of the second page goes.
    assert_eq!(fake.break_watches(), WATCHES);
    delete_volume(&fake, "pv-rwo");
    fake.create(VOLUMES, pv("a-while-away", &["ReadWriteOnce"]))
        .unwrap();
    fake.compact();

    // The first page (500 volumes, `a-while-away` among them) has been read. A change of a
    // namespace is published meanwhile: readers still see the whole old list of volumes, and
    // the server stays ready.
    arrived(&mut second_page, "the second page of the relist").await;
    publish_namespace_label(&fake, &mut r, "during-relist").await;
    assert!(ready(&r.state), "not ready during the relist");
    assert!(
        volumes(&r.state) == before,
        "half a relist is visible: {} volumes, a-while-away {}, pv-rwo {}",
        volumes(&r.state).len(),
        volumes(&r.state).contains_key("a-while-away"),
        volumes(&r.state).contains_key("pv-rwo"),
    );

    second_page.release();
    r.until("relisted state", |s| {
        let f = s.facts();
        let c = f.cluster.as_ref().unwrap();
        c.volumes.contains_key("a-while-away") && !c.volumes.contains_key("pv-rwo")
    })
    .await;
    assert_eq!(volumes(&r.state).len(), 604);
    assert!(
        count_lists(&fake) > lists_before,
        "410 Gone must lead to a relist"
    );
    assert!(ready(&r.state));
}

#[tokio::test]
async fn a_broken_watch_keeps_serving_the_last_state_counts_and_recovers() {
    let fake = seeded().await;
    let mut r = start_caches(&fake);
    r.until("first sync", synced).await;
    watches_open(&fake).await;
    let before = volumes(&r.state);

    // The next requests fail (as an API server outage would), and open watches drop; the
    // volumes' first request after the failures waits until the test lets it through.
    fake.fail_next(3, 500);
    let mut volumes_back =
        fake.hold_next(|request| request.starts_with("GET /api/v1/persistentvolumes?"));
    assert_eq!(fake.break_watches(), WATCHES);
    fake.create(VOLUMES, pv("after-outage", &["ReadWriteOncePod"]))
        .unwrap();

    // During the outage of the volumes' watch, another change is published: the volumes are
    // the last state, whole, and the server is ready.
    arrived(&mut volumes_back, "the volumes' watch to come back").await;
    publish_namespace_label(&fake, &mut r, "during-outage").await;
    assert!(ready(&r.state), "not ready during the outage");
    assert!(volumes(&r.state) == before, "the last state was not kept");

    volumes_back.release();
    r.until("recovered", |s| {
        s.facts()
            .cluster
            .as_ref()
            .unwrap()
            .volumes
            .contains_key("after-outage")
    })
    .await;
    assert!(r.volume_modes("pv-bind-rwop").is_some());
    assert!(ready(&r.state));
    // Each failed request is one counted error.
    assert_eq!(watch_errors(&r.state), 3, "{}", r.state.metrics.encode());
}

#[tokio::test]
async fn not_ready_until_the_api_answers() {
    let fake = seeded().await;
    // Each watch's first request fails (one per watch until it is answered), so the request
    // after the failures is a retry whose caller has counted its error.
    fake.fail_next(WATCHES as u32, 500);
    // The first request after the failures waits until the test lets it through.
    let mut after_failures = fake.hold_next(|_| true);
    let mut r = start_caches(&fake);
    arrived(&mut after_failures, "a request after the failures").await;
    // Every request so far failed: nothing has synced, so the facts are unknown and the server
    // is not ready; the caller that tried again has counted its error first.
    assert!(!synced(&r.state));
    assert_eq!(
        r.state.not_ready_reason(),
        Some("cluster caches have not synced yet")
    );
    assert!(r.state.facts().cluster.is_none());
    assert!(watch_errors(&r.state) >= 1, "{}", r.state.metrics.encode());

    after_failures.release();
    r.until("sync after failures", synced).await;
    assert!(ready(&r.state));
    // Each failed request is one counted error.
    assert_eq!(
        watch_errors(&r.state),
        WATCHES as u64,
        "{}",
        r.state.metrics.encode()
    );
}

#[tokio::test]
async fn mutation_uses_the_live_default_class_and_provisioner() {
    let fake = seeded().await;
    let mut r = start_caches(&fake);
    r.until("first sync", synced).await;
    // Mutation on, no class listed: the cluster's facts decide.
    let policy = Policy::from_yaml("mutation:\n  enabled: true\n", "test").unwrap();
    let mut body: Value = serde_json::from_slice(&support::fixtures::admission(
        "01-pvc-create-rwo.pvc.mutate.json",
    ))
    .unwrap();
    // As the DefaultStorageClass plugin leaves it when no class is given: no storageClassName.
    body["request"]["object"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("storageClassName");
    let bytes = serde_json::to_vec(&body).unwrap();

    let decide = |state: &AppState| {
        review(Webhook::Mutate, &policy, &state.facts(), &bytes)
            .unwrap()
            .summary
    };
    let s = decide(&r.state);
    assert_eq!(s.outcome, "mutated", "{s:?}");

    // The default moves to an in-tree class: no longer safe to mutate.
    fake.patch(&format!("{CLASSES}/fast-csi"), json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "false"}}})).unwrap();
    fake.patch(&format!("{CLASSES}/local-disks"), json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}})).unwrap();
    r.until("default is local-disks", |s| {
        default_class(s).as_deref() == Some("local-disks")
    })
    .await;
    let s = decide(&r.state);
    assert_eq!(s.outcome, "allowed");
    assert!(
        s.explanation
            .unwrap()
            .contains("in-tree provisioner \"kubernetes.io/no-provisioner\"")
    );

    // No default at all.
    fake.delete(&format!("{CLASSES}/local-disks")).unwrap();
    r.until("no default", |s| {
        s.facts()
            .cluster
            .as_ref()
            .is_some_and(|c| c.default_storage_class.is_none())
    })
    .await;
    assert!(
        decide(&r.state)
            .explanation
            .unwrap()
            .contains("has no default class")
    );
}
