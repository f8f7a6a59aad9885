//! The steps, in order. Each one looks at the live objects first and does only what is missing,
//! so running a step twice, or after a crash in its middle, is safe.

use std::fmt::Debug;
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::wait::{Condition, await_condition};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::consumers::{self, ConsumerKind, ORIGINAL_STRATEGY_ANNOTATION};
use super::statefulset;
use super::{
    MigrateError, MigrateOptions, MigrationState, Progress, api_err, claim_to_create, record,
};
use crate::policy::{AccessMode, HasAccessModes, MIGRATED_FROM_ANNOTATION, OPT_OUT_ANNOTATION};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    RecordState,
    RetainVolume,
    ScaleDown,
    DeleteClaim,
    ReleaseVolume,
    SetVolumeModes,
    CreateClaim,
    WaitBound,
    DeleteStatefulSet,
    CreateStatefulSet,
    ScaleUp,
    RestoreReclaimPolicy,
    ClearState,
}

pub const STEPS: [Step; 11] = [
    Step::RecordState,
    Step::RetainVolume,
    Step::ScaleDown,
    Step::DeleteClaim,
    Step::ReleaseVolume,
    Step::SetVolumeModes,
    Step::CreateClaim,
    Step::WaitBound,
    Step::ScaleUp,
    Step::RestoreReclaimPolicy,
    Step::ClearState,
];

/// The steps of a claim migrated with its StatefulSet: [`STEPS`] with the StatefulSet recreated
/// (with the target in its `volumeClaimTemplates`) once the claims are bound, before it is
/// scaled back. A recorded state counts completed steps of its list, so the order is fixed.
pub const STATEFULSET_STEPS: [Step; 13] = with_statefulset(STEPS);

const fn with_statefulset(steps: [Step; 11]) -> [Step; 13] {
    let mut out = [Step::RecordState; 13];
    let (mut i, mut j) = (0, 0);
    while i < steps.len() {
        if matches!(steps[i], Step::ScaleUp) {
            out[j] = Step::DeleteStatefulSet;
            out[j + 1] = Step::CreateStatefulSet;
            j += 2;
        }
        out[j] = steps[i];
        i += 1;
        j += 1;
    }
    out
}

/// Steps done once the claim is bound again (the same in both lists).
pub(crate) const BOUND: usize = 8;

/// Where the claims of a lockstep group wait for each other: after recording, after scaling
/// down, after being bound, after the StatefulSet is recreated, and at the end. The end of phase
/// `phase` in `steps` (a list without a phase's last step ends it where the one before ends).
pub(crate) const PHASES: usize = 5;

pub(crate) fn phase_end(steps: &[Step], phase: usize) -> usize {
    let ends = [
        Step::RecordState,
        Step::ScaleDown,
        Step::WaitBound,
        Step::CreateStatefulSet,
        Step::ClearState,
    ];
    ends[..=phase.min(PHASES - 1)]
        .iter()
        .filter_map(|end| steps.iter().position(|s| s == end))
        .max()
        .map_or(0, |i| i + 1)
}

impl Step {
    /// The steps that swap the claim: nothing to do once it is [target] and bound to the volume.
    fn swaps(self) -> bool {
        matches!(
            self,
            Step::ScaleDown
                | Step::DeleteClaim
                | Step::ReleaseVolume
                | Step::SetVolumeModes
                | Step::CreateClaim
                | Step::WaitBound
        )
    }

    /// One line saying exactly what the step changes.
    pub fn describe(self, state: &MigrationState, volume: &str) -> String {
        let claim = format!("{}/{}", state.namespace, state.claim);
        let (target, source) = (state.target, state.target.source());
        let retained = state.reclaim_policy == "Retain";
        match self {
            Step::RecordState => format!(
                "record the migration state on PersistentVolume {volume} (annotation rwop-guard.dev/migration, target [{target}])"
            ),
            Step::RetainVolume if retained => format!(
                "keep PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: Retain (it is Retain), so deleting the claim keeps the volume"
            ),
            Step::RetainVolume => format!(
                "set PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: {} -> Retain, so deleting the claim keeps the volume",
                state.reclaim_policy
            ),
            Step::ScaleDown => {
                let mut what: Vec<String> = state
                    .consumers
                    .iter()
                    .map(|c| format!("{c} replicas {} -> 0", c.replicas))
                    .collect();
                what.extend(
                    state
                        .deleted_pods
                        .iter()
                        .map(|p| format!("delete bare Pod {p}")),
                );
                if what.is_empty() {
                    what.push("no consumers found".to_owned());
                }
                let scale = format!(
                    "scale consumers of {claim} down ({}); wait until no pod mounts the claim",
                    what.join(", ")
                );
                if state.is_rollback() || state.switches.is_empty() {
                    return scale;
                }
                let switches: Vec<String> = state
                    .switches
                    .iter()
                    .map(|s| {
                        format!(
                            "switch Deployment {} spec.strategy: {} -> Recreate (the original kept in annotation {ORIGINAL_STRATEGY_ANNOTATION})",
                            s.deployment, s.from
                        )
                    })
                    .collect();
                format!("{}; {scale}", switches.join(", "))
            }
            Step::DeleteClaim => format!(
                "delete PersistentVolumeClaim {claim} (precondition: its uid), wait until it is gone (the volume is retained)"
            ),
            Step::ReleaseVolume => format!(
                "clear PersistentVolume {volume} spec.claimRef.uid and resourceVersion (keep namespace/name, so only {claim} can bind it)"
            ),
            Step::SetVolumeModes if state.is_rollback() => format!(
                "set PersistentVolume {volume} spec.accessModes: [{source}] -> [{target}], remove annotation {MIGRATED_FROM_ANNOTATION}"
            ),
            Step::SetVolumeModes => format!(
                "set PersistentVolume {volume} spec.accessModes: [{source}] -> [{target}], annotation {MIGRATED_FROM_ANNOTATION}: {source}"
            ),
            Step::CreateClaim if state.is_rollback() => format!(
                "create PersistentVolumeClaim {claim} with accessModes [{target}] and volumeName {volume} (annotation {OPT_OUT_ANNOTATION}: \"false\", so the mutating webhook leaves it [{target}])"
            ),
            Step::CreateClaim => format!(
                "create PersistentVolumeClaim {claim} with accessModes [{target}] and volumeName {volume} (annotation {MIGRATED_FROM_ANNOTATION}: {source})"
            ),
            Step::WaitBound => {
                format!("wait until PersistentVolumeClaim {claim} is Bound to {volume}")
            }
            Step::ScaleUp => {
                let what: Vec<String> = state
                    .consumers
                    .iter()
                    .map(|c| format!("{c} replicas 0 -> {}", c.replicas))
                    .collect();
                let restore = if what.is_empty() {
                    "restore consumers (none recorded)".to_owned()
                } else {
                    format!("restore consumers ({})", what.join(", "))
                };
                if !state.is_rollback() || state.switches.is_empty() {
                    return restore;
                }
                let switches: Vec<String> = state
                    .switches
                    .iter()
                    .map(|s| {
                        format!(
                            "restore Deployment {} spec.strategy: Recreate -> {} (from annotation {ORIGINAL_STRATEGY_ANNOTATION})",
                            s.deployment, s.from
                        )
                    })
                    .collect();
                format!("{}; {restore}", switches.join(", "))
            }
            Step::RestoreReclaimPolicy if retained => format!(
                "keep PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: Retain (it was Retain before)"
            ),
            Step::RestoreReclaimPolicy => format!(
                "set PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: Retain -> {}",
                state.reclaim_policy
            ),
            Step::ClearState => {
                format!("remove the migration state from PersistentVolume {volume}")
            }
            Step::DeleteStatefulSet => {
                let name = state.statefulset.as_ref().map_or("", |s| s.name.as_str());
                format!(
                    "delete StatefulSet {}/{name} with propagationPolicy: Orphan (its pods, claims and revisions are kept), wait until it is gone (its manifest is in the migration state)",
                    state.namespace
                )
            }
            Step::CreateStatefulSet => {
                let name = state.statefulset.as_ref().map_or("", |s| s.name.as_str());
                format!(
                    "create StatefulSet {}/{name} again from the recorded manifest, volumeClaimTemplates accessModes [{target}], replicas 0 (restored next)",
                    state.namespace
                )
            }
        }
    }
}

const CONFLICT_RETRIES: u64 = 10;

/// Reads, changes and replaces a volume with its resourceVersion as precondition; retries on
/// conflicts. `change` returns whether it changed anything (nothing is written otherwise); so
/// does the result.
pub(crate) async fn update_volume(
    volumes: &Api<PersistentVolume>,
    name: &str,
    what: &str,
    mut change: impl FnMut(&mut PersistentVolume) -> bool,
) -> Result<bool, MigrateError> {
    let mut attempts = 0;
    loop {
        let mut pv = volumes.get(name).await.map_err(api_err(format!(
            "cannot read PersistentVolume {name} to {what}"
        )))?;
        if !change(&mut pv) {
            return Ok(false);
        }
        match volumes.replace(name, &PostParams::default(), &pv).await {
            Ok(_) => return Ok(true),
            // Someone else wrote in between: read again and re-apply the change.
            Err(kube::Error::Api(status))
                if status.is_conflict() && attempts < CONFLICT_RETRIES =>
            {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempts)).await;
            }
            Err(e) => {
                return Err(api_err(format!(
                    "cannot update PersistentVolume {name} to {what}"
                ))(e));
            }
        }
    }
}

/// Watches object `name` of `api` until `condition` holds (`None`: the object is absent), for at
/// most the run's timeout.
pub(super) async fn await_object<K>(
    api: &Api<K>,
    name: &str,
    condition: impl Condition<K>,
    opts: &MigrateOptions,
    what: &str,
) -> Result<(), MigrateError>
where
    K: Clone + Debug + Send + Sync + DeserializeOwned + Resource<DynamicType = ()> + 'static,
{
    let wait = await_condition(api.clone(), name, condition);
    match tokio::time::timeout(opts.timeout, wait).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::runtime::wait::Error::ProbeFailed(error))) => Err(MigrateError::Watch {
            what: format!("cannot watch for {what}"),
            error,
        }),
        Err(_) => Err(MigrateError::Timeout {
            what: what.to_owned(),
            timeout: opts.timeout,
        }),
    }
}

/// Watches the objects of `api` until `done` holds of all of them (judged on complete lists
/// only, after each change), for at most the run's timeout.
pub(super) async fn await_listed<K>(
    api: &Api<K>,
    opts: &MigrateOptions,
    what: &str,
    done: impl Fn(&[Arc<K>]) -> bool,
) -> Result<(), MigrateError>
where
    K: Clone + Debug + Send + Sync + DeserializeOwned + Resource<DynamicType = ()> + 'static,
{
    let (store, writer) = reflector::store();
    let wait = async {
        let mut events = pin!(reflector(
            writer,
            watcher(api.clone(), watcher::Config::default())
        ));
        while let Some(event) = events.try_next().await? {
            let listing = matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
            if !listing && done(&store.state()) {
                break;
            }
        }
        Ok(())
    };
    match tokio::time::timeout(opts.timeout, wait).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(MigrateError::Watch {
            what: format!("cannot watch for {what}"),
            error,
        }),
        Err(_) => Err(MigrateError::Timeout {
            what: what.to_owned(),
            timeout: opts.timeout,
        }),
    }
}

fn bound_to(pvc: &PersistentVolumeClaim, volume: &str) -> bool {
    pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(volume)
        && pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

pub(crate) async fn execute(
    client: &Client,
    volume: &str,
    state: &mut MigrationState,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
    after_step: &mut dyn FnMut(usize) -> bool,
    until: usize,
) -> Result<(), MigrateError> {
    let steps = state.steps();
    let total = steps.len();
    for (i, step) in steps.iter().copied().enumerate() {
        if i < state.completed {
            continue;
        }
        if i >= until {
            break;
        }
        progress(Progress::Started {
            step,
            index: i + 1,
            total,
            what: step.describe(state, volume),
        });
        let started = Instant::now();
        match Ctx::new(client, volume, state, opts).run(step).await? {
            Some(why) => progress(Progress::Skipped { step, why }),
            None => progress(Progress::Done {
                step,
                elapsed: started.elapsed(),
            }),
        }
        state.completed = i + 1;
        if step != Step::ClearState {
            record(&Api::all(client.clone()), volume, Some(state)).await?;
        }
        if !after_step(i + 1) {
            return Err(MigrateError::Interrupted { completed: i + 1 });
        }
    }
    Ok(())
}

/// What every step works with: the cluster, the migration and the knobs of the run.
struct Ctx<'a> {
    client: &'a Client,
    volumes: Api<PersistentVolume>,
    claims: Api<PersistentVolumeClaim>,
    volume: &'a str,
    state: &'a MigrationState,
    opts: &'a MigrateOptions,
    /// `namespace/claim`, for messages.
    claim_name: String,
}

/// What a step returns: why it was skipped, if it had nothing to do.
type Outcome = Result<Option<String>, MigrateError>;

impl<'a> Ctx<'a> {
    fn new(
        client: &'a Client,
        volume: &'a str,
        state: &'a MigrationState,
        opts: &'a MigrateOptions,
    ) -> Self {
        Ctx {
            client,
            volumes: Api::all(client.clone()),
            claims: Api::namespaced(client.clone(), &state.namespace),
            volume,
            state,
            opts,
            claim_name: format!("{}/{}", state.namespace, state.claim),
        }
    }

    fn target(&self) -> AccessMode {
        self.state.target.mode()
    }

    async fn claim(&self) -> Result<Option<PersistentVolumeClaim>, MigrateError> {
        self.claims
            .get_opt(&self.state.claim)
            .await
            .map_err(api_err(format!("cannot read claim {}", self.claim_name)))
    }

    async fn pv(&self) -> Result<PersistentVolume, MigrateError> {
        self.volumes.get(self.volume).await.map_err(api_err(format!(
            "cannot read PersistentVolume {}",
            self.volume
        )))
    }

    /// The live volume and claim of the migration.
    async fn read_pair(
        &self,
    ) -> Result<(PersistentVolume, Option<PersistentVolumeClaim>), MigrateError> {
        Ok((self.pv().await?, self.claim().await?))
    }

    async fn run(&self, step: Step) -> Outcome {
        if step.swaps() {
            let (pv, claim) = self.read_pair().await?;
            if swap_done(&pv, claim.as_ref(), self.volume, self.target()) {
                return Ok(Some(format!(
                    "claim {} is already [{}] and bound to {}",
                    self.claim_name, self.state.target, self.volume
                )));
            }
        }
        match step {
            Step::RecordState => {
                record(&self.volumes, self.volume, Some(self.state)).await?;
                Ok(None)
            }
            Step::RetainVolume => self.set_reclaim_policy("Retain").await,
            Step::ScaleDown => self.scale_down().await,
            Step::DeleteClaim => self.delete_claim().await,
            Step::ReleaseVolume => self.release_volume().await,
            Step::SetVolumeModes => self.set_volume_modes().await,
            Step::CreateClaim => self.create_claim().await,
            Step::WaitBound => self.wait_bound().await,
            Step::ScaleUp => self.scale_up().await,
            Step::RestoreReclaimPolicy => self.set_reclaim_policy(&self.state.reclaim_policy).await,
            Step::ClearState => {
                record(&self.volumes, self.volume, None).await?;
                Ok(None)
            }
            Step::DeleteStatefulSet | Step::CreateStatefulSet => {
                let ns = &self.state.namespace;
                let Some(sts) = &self.state.statefulset else {
                    return Ok(Some("no StatefulSet recorded".to_owned()));
                };
                let target = self.state.target;
                if step == Step::DeleteStatefulSet {
                    statefulset::delete(self.client, ns, sts, target, self.opts).await
                } else {
                    statefulset::create(self.client, ns, sts, target).await
                }
            }
        }
    }

    async fn scale_down(&self) -> Outcome {
        let (client, state) = (self.client, self.state);
        if !state.is_rollback() {
            for switch in &state.switches {
                consumers::switch_to_recreate(client, &state.namespace, &switch.deployment).await?;
            }
        }
        for consumer in &state.consumers {
            consumers::scale(client, &state.namespace, consumer, 0).await?;
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &state.namespace);
        for pod in &state.deleted_pods {
            match pods.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(api_err(format!("cannot delete pod {pod}"))(e)),
            }
        }
        let what = format!("no pod to mount {}", self.claim_name);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &state.namespace);
        await_listed(&pods, self.opts, &what, |pods| {
            !pods.iter().any(|p| consumers::mounts(p, &state.claim))
        })
        .await?;
        Ok(None)
    }

    async fn delete_claim(&self) -> Outcome {
        let (claim_name, volume) = (&self.claim_name, self.volume);
        let Some(claim) = self.claim().await? else {
            return Ok(Some("the claim is already deleted".to_owned()));
        };
        let bound_elsewhere = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|v| !v.is_empty() && v != volume);
        if bound_elsewhere {
            return Err(MigrateError::Refused(format!(
                "claim {claim_name} now refers to another volume; refusing to delete it"
            )));
        }
        // Never delete a claim while its volume could go with it.
        let pv = self.pv().await?;
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
        if policy != Some("Retain") {
            return Err(MigrateError::Refused(format!(
                "PersistentVolume {volume} has reclaim policy {policy:?}, not Retain; refusing to delete its claim"
            )));
        }
        if claim.metadata.deletion_timestamp.is_none() {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: claim.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.claims.delete(&self.state.claim, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(api_err(format!("cannot delete claim {claim_name}"))(e)),
            }
        }
        let what = format!("claim {claim_name} to be gone");
        let gone = |c: Option<&PersistentVolumeClaim>| c.is_none();
        await_object(&self.claims, &self.state.claim, gone, self.opts, &what).await?;
        Ok(None)
    }

    async fn release_volume(&self) -> Outcome {
        let live_claim_uid = self.claim().await?.and_then(|c| c.metadata.uid);
        let changed = update_volume(&self.volumes, self.volume, "clear claimRef.uid", |pv| {
            let Some(claim_ref) = pv.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) else {
                return false;
            };
            let stale = claim_ref.uid.is_some() && claim_ref.uid != live_claim_uid;
            if stale {
                claim_ref.uid = None;
                claim_ref.resource_version = None;
            }
            stale
        })
        .await?;
        Ok((!changed).then(|| "the volume is not bound to a deleted claim".to_owned()))
    }

    async fn set_volume_modes(&self) -> Outcome {
        let target = self.target();
        // The marker goes in the same update as the modes: a volume is never [ReadWriteOncePod]
        // by migrate's hand without it, nor [ReadWriteOnce] again with it.
        let changed = update_volume(&self.volumes, self.volume, "set its access modes", |pv| {
            let modes_ok = pv.access_modes().is_only(target);
            let spec = pv.spec.get_or_insert_with(Default::default);
            spec.access_modes = Some(vec![target.as_str().to_owned()]);
            let annotations = pv.metadata.annotations.get_or_insert_with(Default::default);
            let marker_ok = if target == AccessMode::ReadWriteOnce {
                annotations.remove(MIGRATED_FROM_ANNOTATION).is_none()
            } else {
                let rwo = AccessMode::ReadWriteOnce.as_str();
                annotations
                    .insert(MIGRATED_FROM_ANNOTATION.to_owned(), rwo.to_owned())
                    .is_some_and(|v| v == rwo)
            };
            !(modes_ok && marker_ok)
        })
        .await?;
        Ok((!changed).then(|| format!("the volume is already [{}]", self.state.target)))
    }

    async fn create_claim(&self) -> Outcome {
        let (claim_name, volume) = (&self.claim_name, self.volume);
        let (created, skipped) = match self.claim().await? {
            Some(c) => (c, Some("the claim exists".to_owned())),
            None => {
                let claim = claim_to_create(self.state, volume)?;
                match self.claims.create(&PostParams::default(), &claim).await {
                    Ok(c) => (c, None),
                    Err(kube::Error::Api(s)) if s.is_already_exists() => (
                        self.claims
                            .get(&self.state.claim)
                            .await
                            .map_err(api_err(format!("cannot read claim {claim_name}")))?,
                        None,
                    ),
                    Err(e) => return Err(api_err(format!("cannot create claim {claim_name}"))(e)),
                }
            }
        };
        // A claim with other modes never binds to the volume: say so now rather than time
        // out waiting (a mutating webhook rewrote it, or someone else created it).
        let modes = created.access_modes();
        if !modes.is_only(self.target()) {
            return Err(MigrateError::Refused(format!(
                "claim {claim_name} is {modes}, not [{}], and cannot bind to PersistentVolume {volume}; \
                 a mutating webhook rewrote it, or it was created by someone else: delete it \
                 (the volume is retained) and run the same command again",
                self.state.target
            )));
        }
        Ok(skipped)
    }

    async fn wait_bound(&self) -> Outcome {
        let what = format!("claim {} to be Bound to {}", self.claim_name, self.volume);
        let bound = |c: Option<&PersistentVolumeClaim>| c.is_some_and(|c| bound_to(c, self.volume));
        await_object(&self.claims, &self.state.claim, bound, self.opts, &what).await?;
        Ok(None)
    }

    async fn scale_up(&self) -> Outcome {
        let (client, state) = (self.client, self.state);
        let mut any = false;
        if state.is_rollback() {
            // Every consumer Deployment `--switch-to-recreate` switched, recorded in the state
            // or not: the annotation on the Deployment is the record.
            for c in state
                .consumers
                .iter()
                .filter(|c| c.kind == ConsumerKind::Deployment)
            {
                any |= consumers::restore_strategy(client, &state.namespace, &c.name).await?;
            }
        }
        for consumer in &state.consumers {
            any |= consumers::scale(client, &state.namespace, consumer, consumer.replicas).await?;
        }
        Ok((!any).then(|| "consumers already at their replica counts".to_owned()))
    }

    async fn set_reclaim_policy(&self, policy: &str) -> Outcome {
        let what = format!("set its reclaim policy to {policy}");
        let changed = update_volume(&self.volumes, self.volume, &what, |pv| {
            let spec = pv.spec.get_or_insert_with(Default::default);
            if spec.persistent_volume_reclaim_policy.as_deref() == Some(policy) {
                return false;
            }
            spec.persistent_volume_reclaim_policy = Some(policy.to_owned());
            true
        })
        .await?;
        Ok((!changed).then(|| format!("reclaim policy is already {policy}")))
    }
}

/// Whether claim and volume are already swapped: both `target`, the claim bound to the volume.
fn swap_done(
    pv: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    volume: &str,
    target: AccessMode,
) -> bool {
    let pv_ok = pv.access_modes().is_only(target);
    let claim_ok = claim.is_some_and(|c| {
        c.access_modes().is_only(target)
            && bound_to(c, volume)
            && c.metadata.deletion_timestamp.is_none()
    });
    pv_ok && claim_ok
}

/// Where each step stands on the live objects, for the plan: done (recorded), already in place
/// (the run will skip it, and why), or to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    ToDo,
    /// Recorded as done in the migration state.
    Done,
    /// Not recorded, but what it does is already true of the live objects.
    InPlace(String),
}

/// The status of every step of `state` on the live objects.
pub(crate) async fn in_place(
    client: &Client,
    volume: &str,
    state: &MigrationState,
) -> Result<Vec<StepStatus>, MigrateError> {
    let (pv, claim) = Ctx::new(client, volume, state, &MigrateOptions::default())
        .read_pair()
        .await?;
    let mut replicas = Vec::new();
    for c in &state.consumers {
        replicas.push(consumers::replicas_of(client, &state.namespace, c).await?);
    }
    Ok(statuses(state, volume, &pv, claim.as_ref(), &replicas))
}

/// [`in_place`] without I/O: `replicas` are the consumers' live replica counts, in order.
pub fn statuses(
    state: &MigrationState,
    volume: &str,
    pv: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    replicas: &[i32],
) -> Vec<StepStatus> {
    let target = state.target.mode();
    let swapped = swap_done(pv, claim, volume, target);
    let swap_why = || {
        format!(
            "claim {}/{} is already [{}] and bound to {volume}",
            state.namespace,
            state.claim,
            target.as_str()
        )
    };
    let spec = pv.spec.as_ref();
    let policy = spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    let restored = state
        .consumers
        .iter()
        .zip(replicas)
        .all(|(c, live)| c.replicas == *live);
    state
        .steps()
        .iter()
        .enumerate()
        .map(|(i, step)| {
            if i < state.completed {
                return StepStatus::Done;
            }
            if swapped && step.swaps() {
                return StepStatus::InPlace(swap_why());
            }
            let claim_uid = spec
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| c.uid.as_deref());
            let modes = pv.access_modes();
            let why = match step {
                Step::RetainVolume => (policy == Some("Retain"))
                    .then(|| "reclaim policy is already Retain".to_owned()),
                Step::DeleteClaim => claim
                    .is_none()
                    .then(|| "the claim is already deleted".to_owned()),
                Step::ReleaseVolume => claim_uid
                    .is_none_or(str::is_empty)
                    .then(|| "the volume is not bound to a claim".to_owned()),
                Step::SetVolumeModes => modes
                    .is_only(target)
                    .then(|| format!("the volume is already [{}]", target.as_str())),
                Step::CreateClaim => claim
                    .filter(|c| {
                        c.access_modes().is_only(target) && c.metadata.deletion_timestamp.is_none()
                    })
                    .map(|_| "the claim exists".to_owned()),
                Step::ScaleUp => {
                    (swapped && restored && (!state.is_rollback() || state.switches.is_empty()))
                        .then(|| "consumers already at their replica counts".to_owned())
                }
                Step::RestoreReclaimPolicy => (swapped
                    && policy == Some(state.reclaim_policy.as_str()))
                .then(|| format!("reclaim policy is already {}", state.reclaim_policy)),
                Step::RecordState
                | Step::ScaleDown
                | Step::WaitBound
                | Step::DeleteStatefulSet
                | Step::CreateStatefulSet
                | Step::ClearState => None,
            };
            why.map_or(StepStatus::ToDo, StepStatus::InPlace)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state recorded by a StatefulSet run counts steps of this list: they are the claim's
    /// steps with the StatefulSet's two as steps 9 and 10.
    #[test]
    fn statefulset_steps_are_the_claim_steps_with_two_before_scale_up() {
        assert_eq!(
            STATEFULSET_STEPS[8..10],
            [Step::DeleteStatefulSet, Step::CreateStatefulSet]
        );
        let mut rest = STATEFULSET_STEPS.to_vec();
        rest.drain(8..10);
        assert_eq!(rest, STEPS);
        assert_eq!(STATEFULSET_STEPS[BOUND - 1], Step::WaitBound);
    }
}
