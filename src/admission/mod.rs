//! `admission.k8s.io/v1` AdmissionReview in, policy, AdmissionReview out.
//!
//! Decoding produces `kube::core::admission` types around the policy's [`Claim`] and [`Volume`],
//! which hold what the rules read and nothing else. The only hand-written wire detail of the
//! answer is the `patch` field: kube-core serializes it as an array of numbers, while the API
//! documents a base64 string, which is what we send.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, META_API_VERSION_V1, META_KIND, Operation,
};
use kube::core::{GroupVersionKind, Resource, Status, TypeMeta};
use serde::{Deserialize, Serialize};

use crate::bounded::{LOG_FIELD_BYTES, MESSAGE_BYTES, NAME_BYTES, truncate, truncate_in_place};
use k8s_openapi::api::apps::v1::Deployment;

use crate::migrate::model::workloads::{WorkloadKind, WorkloadView};
use crate::policy::{
    Claim, Decision, Facts, Outcome, Policy, Subject, Unread, Volume, keep_rwop_on_reapply,
    mutate_claim, validate_claim, validate_volume, validate_workload,
};

/// Which of the two webhooks is answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Webhook {
    Validate,
    Mutate,
}

impl Webhook {
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Validate => "validate",
            Webhook::Mutate => "mutate",
        }
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Webhook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "validate" => Ok(Webhook::Validate),
            "mutate" => Ok(Webhook::Mutate),
            other => Err(format!(
                "unknown webhook {other:?}: expected validate or mutate"
            )),
        }
    }
}

/// A body that cannot be answered with an AdmissionReview. The message says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    // Each message holds its cause, which is therefore not also a `source()` (said once when
    // printed with its chain).
    #[error("body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("body is not an AdmissionReview: {0}")]
    NotReview(serde_json::Error),
    #[error(
        "unsupported AdmissionReview apiVersion {found:?} or kind {kind:?}: expected apiVersion \
         admission.k8s.io/v1, kind AdmissionReview"
    )]
    UnsupportedVersion { found: String, kind: String },
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("the {kind} in request {uid:?} does not decode: {error}")]
    BadObject {
        kind: String,
        uid: String,
        error: serde_json::Error,
    },
    #[error("cannot encode the response: {0}")]
    Encode(String),
}

impl ReviewError {
    /// True when the fault is the client's (HTTP 400); false for our own failure (500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, ReviewError::Encode(_))
    }
}

/// What was decided about one request, for the log line and metrics. The fields the request
/// controls are cut to [`LOG_FIELD_BYTES`] (see `bounded`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewSummary {
    pub uid: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub operation: &'static str,
    pub user: String,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub message: Option<String>,
    pub explanation: Option<String>,
}

/// The response AdmissionReview as JSON bytes, and what it decided.
#[derive(Debug)]
pub struct Reviewed {
    pub body: Vec<u8>,
    pub summary: ReviewSummary,
}

/// The review's top level. Decoded with this instead of kube's `AdmissionReview`, whose
/// `#[serde(flatten)]` buffers the whole request before decoding it.
#[derive(Deserialize)]
#[serde(bound = "R: Deserialize<'de>")]
struct Envelope<R> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<R>,
}

/// What the decode reads first, to choose the object type.
#[derive(Deserialize)]
struct EnvelopeRequest {
    kind: GroupVersionKind,
    #[serde(default)]
    uid: String,
}

/// A decoded request, by the kind of object it is about.
enum Request {
    // Boxed: a request is 1.6 KiB (claim) to 2.5 KiB (volume), its variants a kilobyte apart.
    Volume(Box<AdmissionRequest<Volume>>),
    Claim(Box<AdmissionRequest<Claim>>),
    /// A workload or pod (rule W2). The view reads the same fields of every kind; the kind is
    /// the request's.
    Workload(
        WorkloadKind,
        Box<AdmissionRequest<WorkloadView<Deployment>>>,
    ),
    Other(Box<AdmissionRequest<Unread>>),
}

/// Answers one AdmissionReview body.
pub fn review(
    webhook: Webhook,
    policy: &Policy,
    facts: &Facts,
    body: &[u8],
) -> Result<Reviewed, ReviewError> {
    let mut request = decode(body)?;
    request.bound_names();
    apply_policy(webhook, policy, facts, &request)
}

impl Request {
    /// Cuts names longer than any valid one (see `bounded`), so that the messages and audit
    /// annotations that name the object stay short whatever the request says.
    fn bound_names(&mut self) {
        match self {
            Request::Volume(req) => bound_names(req),
            Request::Claim(req) => bound_names(req),
            Request::Workload(_, req) => bound_names(req),
            Request::Other(req) => bound_names(req),
        }
    }
}

fn bound_names<K: Resource>(req: &mut AdmissionRequest<K>) {
    truncate_in_place(&mut req.name, NAME_BYTES);
    if let Some(ns) = req.namespace.as_mut() {
        truncate_in_place(ns, NAME_BYTES);
    }
    for object in [req.object.as_mut(), req.old_object.as_mut()]
        .into_iter()
        .flatten()
    {
        let meta = object.meta_mut();
        for name in [
            meta.name.as_mut(),
            meta.generate_name.as_mut(),
            meta.namespace.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            truncate_in_place(name, NAME_BYTES);
        }
    }
}

/// The policy's decision on a decoded request, as the response review.
fn apply_policy(
    webhook: Webhook,
    policy: &Policy,
    facts: &Facts,
    request: &Request,
) -> Result<Reviewed, ReviewError> {
    match request {
        Request::Volume(req) => {
            let decision = match (webhook, req.object.as_ref()) {
                (Webhook::Validate, Some(new)) => {
                    validate_volume(policy, &req.operation, new, req.old_object.as_ref())
                }
                (Webhook::Mutate, Some(new)) => keep_rwop_on_reapply(
                    Subject::volume(&new.metadata),
                    &req.operation,
                    new,
                    req.old_object.as_ref(),
                ),
                _ => Decision::allow(),
            };
            respond(req, decision)
        }
        Request::Claim(req) => {
            let decision = match (webhook, req.object.as_ref()) {
                (Webhook::Validate, Some(new)) => {
                    validate_claim(policy, &req.operation, new, req.old_object.as_ref())
                }
                (Webhook::Mutate, Some(new)) if req.operation == Operation::Update => {
                    let mut meta = new.metadata.clone();
                    if meta.namespace.is_none() {
                        meta.namespace = req.namespace.clone();
                    }
                    keep_rwop_on_reapply(
                        Subject::claim(&meta),
                        &req.operation,
                        new,
                        req.old_object.as_ref(),
                    )
                }
                (Webhook::Mutate, Some(new)) => {
                    mutate_claim(policy, facts, &req.operation, new, req.namespace.as_deref())
                }
                _ => Decision::allow(),
            };
            respond(req, decision)
        }
        Request::Workload(kind, req) => {
            let decision = match (webhook, req.object.as_ref(), &req.operation) {
                (Webhook::Validate, Some(new), Operation::Create | Operation::Update) => {
                    let mut written = new.info(kind.clone());
                    if written.namespace.is_empty() {
                        written.namespace = req.namespace.clone().unwrap_or_default();
                    }
                    if written.name.is_empty() {
                        written.name = req.name.clone();
                    }
                    validate_workload(policy, facts, &written)
                }
                _ => Decision::allow(),
            };
            respond(req, decision)
        }
        Request::Other(req) => respond(req, Decision::allow()),
    }
}

/// The review in two passes: the envelope to choose the object type, then the typed request.
/// Both skip unparsed what their types do not name. Errors say what is wrong.
fn decode(body: &[u8]) -> Result<Request, ReviewError> {
    let envelope: Envelope<EnvelopeRequest> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ReviewError::NotReview(e)
        } else {
            ReviewError::NotJson(e)
        }
    })?;
    if envelope.api_version != META_API_VERSION_V1 || envelope.kind != META_KIND {
        return Err(ReviewError::UnsupportedVersion {
            found: truncate(&envelope.api_version, NAME_BYTES).into_owned(),
            kind: truncate(&envelope.kind, NAME_BYTES).into_owned(),
        });
    }
    let Some(request) = envelope.request else {
        return Err(ReviewError::NoRequest);
    };
    let gvk = &request.kind;
    let core_v1 = gvk.group.is_empty() && gvk.version == "v1";
    let workload = match (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) {
        ("apps", "v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "v1", "Job" | "CronJob")
        | ("", "v1", "Pod") => Some(WorkloadKind::of_owner(&gvk.kind)),
        _ => None,
    };
    if let Some(kind) = workload {
        // A pod's kind is not an owner kind; of_owner names it Other("Pod").
        let kind = if gvk.kind == "Pod" {
            WorkloadKind::Pod
        } else {
            kind
        };
        return Ok(Request::Workload(kind, decode_typed(body, &request)?));
    }
    Ok(match gvk.kind.as_str() {
        "PersistentVolume" if core_v1 => Request::Volume(decode_typed(body, &request)?),
        "PersistentVolumeClaim" if core_v1 => Request::Claim(decode_typed(body, &request)?),
        _ => Request::Other(decode_typed(body, &request)?),
    })
}

fn decode_typed<K>(
    body: &[u8],
    envelope: &EnvelopeRequest,
) -> Result<Box<AdmissionRequest<K>>, ReviewError>
where
    K: Resource + for<'de> Deserialize<'de>,
{
    let review: Envelope<Box<AdmissionRequest<K>>> =
        serde_json::from_slice(body).map_err(|error| ReviewError::BadObject {
            kind: truncate(&envelope.kind.kind, NAME_BYTES).into_owned(),
            uid: truncate(&envelope.uid, LOG_FIELD_BYTES).into_owned(),
            error,
        })?;
    let mut request = review.request.ok_or(ReviewError::NoRequest)?;
    request.types = TypeMeta {
        api_version: review.api_version,
        kind: review.kind,
    };
    Ok(request)
}

/// Builds the response review from the decision.
fn respond<K: Resource>(
    req: &AdmissionRequest<K>,
    mut decision: Decision,
) -> Result<Reviewed, ReviewError> {
    // Names are bounded already; this bounds whatever else a rule echoes (a class name, an
    // unknown access mode).
    for text in decision
        .message
        .iter_mut()
        .chain(decision.explanation.iter_mut())
        .chain(decision.warnings.iter_mut())
        .chain(decision.audit.iter_mut().map(|(_, value)| value))
    {
        truncate_in_place(text, MESSAGE_BYTES);
    }
    let field = |s: &str| truncate(s, LOG_FIELD_BYTES).into_owned();
    let summary = ReviewSummary {
        uid: field(&req.uid),
        kind: field(&req.kind.kind),
        namespace: req.namespace.clone(),
        name: req.name.clone(),
        operation: operation_name(&req.operation),
        user: field(req.user_info.username.as_deref().unwrap_or_default()),
        dry_run: req.dry_run,
        outcome: decision.outcome(),
        message: decision.message.clone(),
        explanation: decision.explanation.clone(),
    };
    let mut response = AdmissionResponse::from(req);
    if let Some(patch) = decision.patch {
        response = response
            .with_patch(patch)
            .map_err(|e| ReviewError::Encode(e.to_string()))?;
    }
    if !decision.allowed {
        let message = decision.message.unwrap_or_default();
        response.allowed = false;
        response.result = Status::failure(&message, "Forbidden").with_code(403);
    }
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings);
    }
    response.audit_annotations = decision.audit.into_iter().collect::<HashMap<_, _>>();
    let body = encode(response)?;
    Ok(Reviewed { body, summary })
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

#[derive(Serialize)]
struct WireReview<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
struct WireResponse<'a> {
    #[serde(flatten)]
    response: &'a AdmissionResponse,
    /// Base64 of the JSON Patch, as the AdmissionReview API documents it.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    /// Sorted, so the same decision always gives the same bytes.
    #[serde(
        rename = "auditAnnotations",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    audit_annotations: BTreeMap<String, String>,
}

/// Serializes the response review with the patch as a base64 string.
pub fn encode(mut response: AdmissionResponse) -> Result<Vec<u8>, ReviewError> {
    let patch = response
        .patch
        .take()
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    let audit_annotations = std::mem::take(&mut response.audit_annotations)
        .into_iter()
        .collect();
    let wire = WireReview {
        api_version: META_API_VERSION_V1,
        kind: META_KIND,
        response: WireResponse {
            response: &response,
            patch,
            audit_annotations,
        },
    };
    serde_json::to_vec(&wire).map_err(|e| ReviewError::Encode(e.to_string()))
}
