//! `admission.k8s.io/v1` AdmissionReview in, policy, AdmissionReview out.
//!
//! Decoding uses `kube::core::admission` and `k8s_openapi` types. The only hand-written wire
//! detail is the `patch` field: kube-core serializes it as an array of numbers, while the API
//! documents a base64 string, which is what we send.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use kube::core::{DynamicObject, GroupVersionKind, Resource, Status};
use serde::{Deserialize, Serialize};

use crate::policy::{Decision, Facts, Policy, mutate_claim, validate_claim, validate_volume};

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
    #[error("body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("body is not an AdmissionReview: {0}")]
    NotReview(#[source] serde_json::Error),
    #[error(
        "unsupported AdmissionReview apiVersion {found:?} or kind {kind:?}: expected apiVersion \
         admission.k8s.io/v1, kind AdmissionReview"
    )]
    UnsupportedVersion { found: String, kind: String },
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("the {kind} in request {uid:?} does not decode: {source}")]
    BadObject {
        kind: String,
        uid: String,
        #[source]
        source: serde_json::Error,
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

/// What was decided about one request, for the log line and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewSummary {
    pub uid: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub operation: &'static str,
    pub user: String,
    pub dry_run: bool,
    /// `allowed`, `denied`, `warned`, `mutated`.
    pub outcome: &'static str,
    pub message: Option<String>,
    pub explanation: Option<String>,
}

impl ReviewSummary {
    pub fn mutated(&self) -> bool {
        self.outcome == "mutated"
    }
}

/// The response AdmissionReview as JSON bytes, and what it decided.
#[derive(Debug)]
pub struct Reviewed {
    pub body: Vec<u8>,
    pub summary: ReviewSummary,
}

/// Only as much of the review as is needed to choose the object type to decode.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<EnvelopeRequest>,
}

#[derive(Deserialize)]
struct EnvelopeRequest {
    kind: GroupVersionKind,
    #[serde(default)]
    uid: String,
}

/// Answers one AdmissionReview body.
pub fn review(
    webhook: Webhook,
    policy: &Policy,
    facts: &Facts,
    body: &[u8],
) -> Result<Reviewed, ReviewError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ReviewError::NotReview(e)
        } else {
            ReviewError::NotJson(e)
        }
    })?;
    if envelope.api_version != META_API_VERSION_V1 || envelope.kind != META_KIND {
        return Err(ReviewError::UnsupportedVersion {
            found: envelope.api_version,
            kind: envelope.kind,
        });
    }
    let Some(request) = envelope.request else {
        return Err(ReviewError::NoRequest);
    };
    let gvk = &request.kind;
    let core_v1 = gvk.group.is_empty() && gvk.version == "v1";
    match gvk.kind.as_str() {
        "PersistentVolume" if core_v1 => {
            let req = decode::<PersistentVolume>(body, &request)?;
            let decision = match (webhook, req.object.as_ref()) {
                (Webhook::Validate, Some(new)) => {
                    validate_volume(policy, &req.operation, new, req.old_object.as_ref())
                }
                _ => Decision::allow(),
            };
            respond(&req, decision)
        }
        "PersistentVolumeClaim" if core_v1 => {
            let req = decode::<PersistentVolumeClaim>(body, &request)?;
            let decision = match (webhook, req.object.as_ref()) {
                (Webhook::Validate, Some(new)) => {
                    validate_claim(policy, &req.operation, new, req.old_object.as_ref())
                }
                (Webhook::Mutate, Some(new)) => {
                    mutate_claim(policy, facts, &req.operation, new, req.namespace.as_deref())
                }
                _ => Decision::allow(),
            };
            respond(&req, decision)
        }
        _ => {
            let req = decode::<DynamicObject>(body, &request)?;
            respond(&req, Decision::allow())
        }
    }
}

fn decode<K>(body: &[u8], envelope: &EnvelopeRequest) -> Result<AdmissionRequest<K>, ReviewError>
where
    K: Resource + for<'de> Deserialize<'de>,
{
    let review: AdmissionReview<K> =
        serde_json::from_slice(body).map_err(|source| ReviewError::BadObject {
            kind: envelope.kind.kind.clone(),
            uid: envelope.uid.clone(),
            source,
        })?;
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// Builds the response review from the decision.
fn respond<K: Resource>(
    req: &AdmissionRequest<K>,
    decision: Decision,
) -> Result<Reviewed, ReviewError> {
    let summary = ReviewSummary {
        uid: req.uid.clone(),
        kind: req.kind.kind.clone(),
        namespace: req.namespace.clone(),
        name: req.name.clone(),
        operation: operation_name(&req.operation),
        user: req.user_info.username.clone().unwrap_or_default(),
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
