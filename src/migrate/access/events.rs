//! Publishes the notes of [`history`](crate::migrate::model::history) as Kubernetes Events
//! (`events.k8s.io/v1`) through kube's event recorder, on the claim and on its PersistentVolume
//! (a cluster-scoped object's Events live in namespace `default`, where `kubectl describe pv`
//! finds them).
//!
//! The history is a courtesy, never a reason to stop: a run that may not create Events (RBAC) or
//! whose Event is refused still migrates. The first failure is said once, through the run's
//! progress, and the rest of the run records none.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};

use crate::migrate::model::history::Note;
use crate::migrate::model::plan::Progress;
use crate::migrate::model::state::MigrationState;

/// `reportingController` of every Event a run records.
pub const REPORTER: &str = "rwop-guard.dev/migrate";

/// The Events of one run (of one claim, a fleet or a StatefulSet).
pub struct History {
    client: Client,
    recorder: Recorder,
    off: AtomicBool,
    /// Volume name and uid: a volume is never recreated, so it is read once.
    volume_uid: Mutex<Option<(String, Option<String>)>>,
}

impl History {
    pub fn new(client: &Client) -> History {
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance: None,
        };
        History {
            client: client.clone(),
            recorder: Recorder::new(client.clone(), reporter),
            off: AtomicBool::new(false),
            volume_uid: Mutex::new(None),
        }
    }

    /// Records `note` on claim `namespace/claim` (as it exists now: a claim recreated by the run
    /// has a new uid, and `kubectl describe` shows the Events of that uid) and on PersistentVolume
    /// `volume`, when given.
    pub async fn record(
        &self,
        note: &Note,
        namespace: &str,
        claim: &str,
        volume: Option<&str>,
        progress: &mut dyn FnMut(Progress),
    ) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let claim_uid = claims
            .get_opt(claim)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.metadata.uid);
        let mut regarding = vec![reference::<PersistentVolumeClaim>(
            Some(namespace),
            claim,
            claim_uid,
        )];
        if let Some(volume) = volume {
            let uid = self.volume_uid(volume).await;
            regarding.push(reference::<PersistentVolume>(None, volume, uid));
        }
        self.publish(note, &regarding, progress).await;
    }

    /// Records `note` on the claim and the volume of the run of `state`.
    pub async fn record_run(
        &self,
        note: &Note,
        state: &MigrationState,
        volume: &str,
        progress: &mut dyn FnMut(Progress),
    ) {
        self.record(note, &state.namespace, &state.claim, Some(volume), progress)
            .await;
    }

    /// Records `note` on the StatefulSet `namespace/name` (a refusal of `migrate --statefulset`).
    pub async fn record_on_statefulset(
        &self,
        note: &Note,
        namespace: &str,
        name: &str,
        progress: &mut dyn FnMut(Progress),
    ) {
        use k8s_openapi::api::apps::v1::StatefulSet;
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let uid = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.metadata.uid);
        let regarding = [reference::<StatefulSet>(Some(namespace), name, uid)];
        self.publish(note, &regarding, progress).await;
    }

    async fn volume_uid(&self, volume: &str) -> Option<String> {
        if let Ok(cached) = self.volume_uid.lock()
            && let Some((name, uid)) = cached.as_ref()
            && name == volume
        {
            return uid.clone();
        }
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let uid = volumes
            .get_opt(volume)
            .await
            .ok()
            .flatten()
            .and_then(|v| v.metadata.uid);
        if let Ok(mut cached) = self.volume_uid.lock() {
            *cached = Some((volume.to_owned(), uid.clone()));
        }
        uid
    }

    async fn publish(
        &self,
        note: &Note,
        regarding: &[ObjectReference],
        progress: &mut dyn FnMut(Progress),
    ) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_owned(),
            note: Some(note.text.clone()),
            action: note.action.clone(),
            secondary: None,
        };
        for r in regarding {
            if let Err(e) = self.recorder.publish(&event, r).await {
                if !self.off.swap(true, Ordering::Relaxed) {
                    progress(Progress::Warning(format!(
                        "cannot record Kubernetes Events ({}); the migration goes on without them \
                         (its history is then only in this output): grant create and patch on \
                         events.k8s.io events to record it",
                        crate::one_line(&e.to_string())
                    )));
                }
                return;
            }
        }
    }
}

fn reference<K: Resource<DynamicType = ()>>(
    namespace: Option<&str>,
    name: &str,
    uid: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}
