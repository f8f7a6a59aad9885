//! `admission.k8s.io/v1` AdmissionReview in, policy, AdmissionReview out.
//!
//! Decoding produces `kube::core::admission` and `k8s_openapi` types, in one pass that skips
//! what no rule reads (see [`review`] and the `prune` module). The only hand-written wire detail
//! of the answer is the `patch` field: kube-core serializes it as an array of numbers, while the
//! API documents a base64 string, which is what we send.

mod prune;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use kube::core::{DynamicObject, GroupVersionKind, Resource, Status};
use serde::de::DeserializeSeed as _;
use serde::{Deserialize, Serialize};

use self::prune::Keep;
use crate::bounded::{LOG_FIELD_BYTES, MESSAGE_BYTES, NAME_BYTES, truncate, truncate_in_place};
use crate::policy::{
    ANNOTATION_PREFIX, Decision, Facts, Outcome, Policy, Subject, keep_rwop_on_reapply,
    mutate_claim, validate_claim, validate_volume,
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

/// What the full decode reads first, to choose the object type.
#[derive(Deserialize)]
struct EnvelopeRequest {
    kind: GroupVersionKind,
    #[serde(default)]
    uid: String,
}

/// A decoded request, by the kind of object it is about.
enum Request {
    // Boxed: a PersistentVolume request is over 7 KiB, too big to move around.
    Volume(Box<AdmissionRequest<PersistentVolume>>),
    Claim(Box<AdmissionRequest<PersistentVolumeClaim>>),
    Other(Box<AdmissionRequest<DynamicObject>>),
}

#[derive(Clone, Copy)]
enum ObjectKind {
    Volume,
    Claim,
    Other,
}

impl ObjectKind {
    fn of(gvk: &GroupVersionKind) -> Self {
        let core_v1 = gvk.group.is_empty() && gvk.version == "v1";
        match gvk.kind.as_str() {
            "PersistentVolume" if core_v1 => ObjectKind::Volume,
            "PersistentVolumeClaim" if core_v1 => ObjectKind::Claim,
            _ => ObjectKind::Other,
        }
    }
}

/// Answers one AdmissionReview body.
///
/// Decodes in one pass only the fields the rules, the log line and the response use (see
/// [`review_full_decode`] for the reference it must agree with). A body it cannot handle (not
/// JSON, not a v1 AdmissionReview, a field the rules read of the wrong type) goes through the
/// full decode, which words the error.
pub fn review(
    webhook: Webhook,
    policy: &Policy,
    facts: &Facts,
    body: &[u8],
) -> Result<Reviewed, ReviewError> {
    let Some(mut request) = decode_pruned(body) else {
        return review_full_decode(webhook, policy, facts, body);
    };
    request.bound_names();
    let reviewed = apply_policy(webhook, policy, facts, &request);
    // Debug builds (every test, the end-to-end suite's server included) answer each review of up
    // to 1 MiB both ways and insist on the same answer, so a rule that reads a field the keep
    // lists drop fails the tests that send that field instead of deciding on its default in
    // production. (Larger bodies are left out: decoding them in full takes a debug build long
    // enough to disturb the tests of time limits, and is what tests/decode_memory.rs measures.)
    #[cfg(debug_assertions)]
    if let (Ok(fast), true) = (&reviewed, body.len() <= 1 << 20)
        && let Ok(full) = review_full_decode(webhook, policy, facts, body)
    {
        assert_eq!(
            (&fast.body, &fast.summary),
            (&full.body, &full.summary),
            "the one-pass decode answered differently from the full one: a rule reads a field \
             that the keep lists in src/admission/mod.rs drop"
        );
    }
    reviewed
}

/// [`review`] with every field of the review decoded: slower, and the reference that the
/// one-pass decode is tested against.
pub fn review_full_decode(
    webhook: Webhook,
    policy: &Policy,
    facts: &Facts,
    body: &[u8],
) -> Result<Reviewed, ReviewError> {
    let mut request = decode_full(body)?;
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
        Request::Other(req) => respond(req, Decision::allow()),
    }
}

/// Every field of the review, in two passes: the envelope to choose the object type, then the
/// typed request. Errors say what is wrong.
fn decode_full(body: &[u8]) -> Result<Request, ReviewError> {
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
    Ok(match ObjectKind::of(&request.kind) {
        ObjectKind::Volume => Request::Volume(decode_typed(body, &request)?),
        ObjectKind::Claim => Request::Claim(decode_typed(body, &request)?),
        ObjectKind::Other => Request::Other(decode_typed(body, &request)?),
    })
}

fn decode_typed<K>(
    body: &[u8],
    envelope: &EnvelopeRequest,
) -> Result<Box<AdmissionRequest<K>>, ReviewError>
where
    K: Resource + for<'de> Deserialize<'de>,
{
    let review: AdmissionReview<K> =
        serde_json::from_slice(body).map_err(|error| ReviewError::BadObject {
            kind: truncate(&envelope.kind.kind, NAME_BYTES).into_owned(),
            uid: truncate(&envelope.uid, LOG_FIELD_BYTES).into_owned(),
            error,
        })?;
    review
        .try_into()
        .map(Box::new)
        .map_err(|_| ReviewError::NoRequest)
}

// What the one-pass decode keeps. Every field that `policy` reads from an object, and every
// request field that the response and the log line use, must be named here; the rest of the
// body is skipped unparsed. `tests/review.rs` checks that both decodes give the same answers.

/// Annotations: only ours (the opt-out and the migration state); the map itself stays present
/// when the object has one, which the mutation patch depends on.
static METADATA: Keep = Keep::Fields(&[
    ("name", &Keep::All),
    ("generateName", &Keep::All),
    ("namespace", &Keep::All),
    ("annotations", &Keep::Prefixed(ANNOTATION_PREFIX)),
]);

/// An object: its type, `METADATA`, and the named `spec` fields.
macro_rules! object_keeping {
    ($($spec:expr),* $(,)?) => {
        Keep::Fields(&[
            ("apiVersion", &Keep::All),
            ("kind", &Keep::All),
            ("metadata", &METADATA),
            ("spec", &Keep::Fields(&[$($spec),*])),
        ])
    };
}

static VOLUME: Keep = object_keeping!(
    ("accessModes", &Keep::All),
    ("claimRef", &Keep::All),
    ("persistentVolumeReclaimPolicy", &Keep::All),
    (
        "csi",
        &Keep::Fields(&[("driver", &Keep::All), ("volumeHandle", &Keep::All)]),
    ),
);

static CLAIM: Keep = object_keeping!(
    ("accessModes", &Keep::All),
    ("selector", &Keep::All),
    ("volumeName", &Keep::All),
    ("storageClassName", &Keep::All),
);

/// The review around a request; `request` names what to keep of it.
macro_rules! review_keeping {
    ($($object:expr)?) => {
        Keep::Fields(&[
            ("apiVersion", &Keep::All),
            ("kind", &Keep::All),
            (
                "request",
                &Keep::Fields(&[
                    ("uid", &Keep::All),
                    ("kind", &Keep::All),
                    ("resource", &Keep::All),
                    ("subResource", &Keep::All),
                    ("requestKind", &Keep::All),
                    ("requestResource", &Keep::All),
                    ("requestSubResource", &Keep::All),
                    ("name", &Keep::All),
                    ("namespace", &Keep::All),
                    ("operation", &Keep::All),
                    ("userInfo", &Keep::Fields(&[("username", &Keep::All)])),
                    ("dryRun", &Keep::All),
                    $(("object", $object), ("oldObject", $object),)?
                ]),
            ),
        ])
    };
}

static VOLUME_REVIEW: Keep = review_keeping!(&VOLUME);
static CLAIM_REVIEW: Keep = review_keeping!(&CLAIM);
/// Other kinds are allowed without looking at them.
static OTHER_REVIEW: Keep = review_keeping!();

/// One pass, keeping only what is used; None when the body needs the full decode.
fn decode_pruned(body: &[u8]) -> Option<Request> {
    let kind = ObjectKind::of(&peek_request_kind(body)?);
    Some(match kind {
        ObjectKind::Volume => Request::Volume(decode_kept(body, &VOLUME_REVIEW)?),
        ObjectKind::Claim => Request::Claim(decode_kept(body, &CLAIM_REVIEW)?),
        ObjectKind::Other => Request::Other(decode_kept(body, &OTHER_REVIEW)?),
    })
}

fn decode_kept<K>(body: &[u8], keep: &'static Keep) -> Option<Box<AdmissionRequest<K>>>
where
    K: Resource + for<'de> Deserialize<'de>,
{
    // Boxed as soon as decoded: the request is too big to pass up through the decoder.
    let envelope: Envelope<Box<AdmissionRequest<K>>> = prune::from_slice(body, keep).ok()?;
    if envelope.api_version != META_API_VERSION_V1 || envelope.kind != META_KIND {
        return None;
    }
    let mut request = envelope.request?;
    request.types = kube::core::TypeMeta {
        api_version: envelope.api_version,
        kind: envelope.kind,
    };
    Some(request)
}

/// `request.kind`, read without parsing anything after it. The API server writes `request`
/// after `apiVersion` and `kind`, and `request.kind` before the objects, so this reads about
/// a hundred bytes of the body.
fn peek_request_kind(body: &[u8]) -> Option<GroupVersionKind> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    // Stopping early makes the parser report the unread rest as an error, which is expected
    // and ignored: only `found` matters, and a body this misreads takes the full decode.
    let _ = Peek {
        path: &["request", "kind"],
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

/// Reads the value at `path` (object keys from the top) into `found`, skipping the keys before
/// each step unparsed and stopping right after it.
struct Peek<'a, T> {
    path: &'static [&'static str],
    found: &'a mut Option<T>,
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for Peek<'_, T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Peek<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object with {:?}", self.path.first())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((step, rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<prune::Key<'de>>()? {
            if key.0 != *step {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else if rest.is_empty() {
                *self.found = Some(map.next_value()?);
                return Ok(());
            } else {
                return map.next_value_seed(Peek {
                    path: rest,
                    found: self.found,
                });
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every capture from a real API server takes the one-pass decode.
    #[test]
    fn real_reviews_take_the_one_pass_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(&path).unwrap();
                assert!(
                    peek_request_kind(&body).is_some(),
                    "peek {}",
                    path.display()
                );
                assert!(decode_pruned(&body).is_some(), "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen > 40, "only {seen} fixtures");
    }

    /// The annotations the rules read are the ones the decode keeps.
    #[test]
    fn rule_annotations_are_under_the_kept_prefix() {
        use crate::policy::{MIGRATION_ANNOTATION, MUTATED_FROM_ANNOTATION, OPT_OUT_ANNOTATION};
        for a in [
            MIGRATION_ANNOTATION,
            OPT_OUT_ANNOTATION,
            MUTATED_FROM_ANNOTATION,
        ] {
            assert!(a.starts_with(ANNOTATION_PREFIX), "{a}");
        }
    }

    /// A key written with an escape is still recognised, and decodes as in the full decode.
    #[test]
    fn escaped_keys_are_kept() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u","kind":{"group":"","version":"v1","kind":"PersistentVolumeClaim"},
            "resource":{"group":"","version":"v1","resource":"persistentvolumeclaims"},
            "operation":"CREATE","userInfo":{"username":"me"},
            "object":{"metadata":{"name":"c"},"spec":{"acc\u0065ssModes":["ReadWriteOncePod","ReadWriteOnce"]}}}}"#;
        let policy = Policy::default();
        let facts = Facts::default();
        let Some(Request::Claim(req)) = decode_pruned(body) else {
            panic!("one-pass decode refused the body");
        };
        let spec = req.object.as_ref().and_then(|o| o.spec.as_ref());
        assert_eq!(
            spec.and_then(|s| s.access_modes.as_ref()).map(Vec::len),
            Some(2)
        );
        let fast = review(Webhook::Validate, &policy, &facts, body).unwrap();
        let full = review_full_decode(Webhook::Validate, &policy, &facts, body).unwrap();
        assert_eq!(fast.summary.outcome, "denied");
        assert_eq!(fast.body, full.body);
    }
}
