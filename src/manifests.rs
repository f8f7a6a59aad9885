//! Offline checks of manifests (what `rwop-guard check` runs): finds the PersistentVolumes,
//! PersistentVolumeClaims and StatefulSet `volumeClaimTemplates` in parsed documents and applies
//! rule V1 (and, on request, mutation M1). Reading files is the caller's business.

use std::fmt;
use std::io::Cursor;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::core::admission::Operation;
use serde::Serialize;
use serde_json::Value;

use crate::policy::{
    AccessModes, Facts, Policy, Rule, Subject, Violation, exclusive_rwop_violation, mutate_claim,
};

/// One rule violation found in a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// 1-based number of the document in its file (empty documents are not counted).
    pub document: usize,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub rule: &'static str,
    pub message: String,
}

impl Finding {
    /// `KIND/NAMESPACE/NAME`; cluster-scoped kinds print `KIND/NAME`, an unset namespace `-`.
    pub fn object(&self) -> String {
        match (&self.namespace, self.kind.as_str()) {
            (_, "PersistentVolume") => format!("{}/{}", self.kind, self.name),
            (Some(ns), _) => format!("{}/{}/{}", self.kind, ns, self.name),
            (None, _) => format!("{}/-/{}", self.kind, self.name),
        }
    }
}

/// A document that cannot be checked: not YAML/JSON, or a PV/PVC that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {document}: {message}")]
pub struct DocumentError {
    pub document: usize,
    pub message: String,
}

/// Parses a multi-document YAML stream (JSON is YAML too). Empty documents are skipped. Stops at
/// the first document that is not valid, naming it.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, DocumentError> {
    let mut docs = Vec::new();
    let mut cursor = Cursor::new(text.as_bytes());
    for result in serde_saphyr::read::<_, Value>(&mut cursor) {
        match result {
            Ok(Value::Null) => {}
            Ok(doc) => docs.push(doc),
            Err(e) => {
                return Err(DocumentError {
                    document: docs.len() + 1,
                    message: format!("not valid YAML: {}", crate::one_line(&e.to_string())),
                });
            }
        }
    }
    Ok(docs)
}

/// Every object in a document: the document itself, or the items of a `List`.
fn objects(doc: &Value) -> Vec<&Value> {
    match items_of(doc) {
        Some(items) => items.iter().collect(),
        None => vec![doc],
    }
}

fn items_of(doc: &Value) -> Option<&Vec<Value>> {
    let kind = doc.get("kind")?.as_str()?;
    if kind.ends_with("List") {
        doc.get("items")?.as_array()
    } else {
        None
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// V1 over one document. `document` is its number, carried into findings and errors.
pub fn check_document(doc: &Value, document: usize) -> Result<Vec<Finding>, DocumentError> {
    let mut findings = Vec::new();
    for obj in objects(doc) {
        let kind = str_at(obj, "/kind").unwrap_or_default();
        let finding = |rule: Rule, message: String, name: &str| Finding {
            document,
            kind: kind.to_owned(),
            namespace: str_at(obj, "/metadata/namespace").map(str::to_owned),
            name: name.to_owned(),
            rule: rule.id(),
            message,
        };
        let undecodable = |what: &str, e: serde_json::Error| DocumentError {
            document,
            message: format!("{what} does not decode: {e}"),
        };
        match kind {
            "PersistentVolume" => {
                let pv: PersistentVolume = serde_json::from_value(obj.clone())
                    .map_err(|e| undecodable("PersistentVolume", e))?;
                let modes = AccessModes::from_optional(
                    pv.spec.as_ref().and_then(|s| s.access_modes.as_ref()),
                );
                if let Some(v) = exclusive_rwop_violation(Subject::volume(&pv.metadata), &modes) {
                    let name = Subject::volume(&pv.metadata).name;
                    findings.push(finding(v.rule, v.detail, name));
                }
            }
            "PersistentVolumeClaim" => {
                let pvc = decode_claim(obj).map_err(|e| undecodable("PersistentVolumeClaim", e))?;
                if let Some(v) = claim_violation(&pvc, Subject::claim(&pvc.metadata)) {
                    let name = Subject::claim(&pvc.metadata).name;
                    findings.push(finding(v.rule, v.detail, name));
                }
            }
            "StatefulSet" => {
                let name = str_at(obj, "/metadata/name").unwrap_or_default();
                for (i, template) in claim_templates(obj).iter().enumerate() {
                    let pvc = decode_claim(template).map_err(|e| {
                        undecodable(
                            &format!("StatefulSet {name:?} volumeClaimTemplates[{i}]"),
                            e,
                        )
                    })?;
                    let subject = Subject {
                        kind: "volumeClaimTemplate",
                        namespace: None,
                        name: pvc.metadata.name.as_deref().unwrap_or(""),
                    };
                    if let Some(v) = claim_violation(&pvc, subject) {
                        findings.push(finding(v.rule, v.message, name));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(findings)
}

fn claim_templates(statefulset: &Value) -> &[Value] {
    statefulset
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Claims and claim templates may omit apiVersion/kind; k8s-openapi insists on them.
fn decode_claim(v: &Value) -> Result<PersistentVolumeClaim, serde_json::Error> {
    let mut v = v.clone();
    if let Some(map) = v.as_object_mut() {
        map.entry("apiVersion").or_insert_with(|| Value::from("v1"));
        map.entry("kind")
            .or_insert_with(|| Value::from("PersistentVolumeClaim"));
    }
    serde_json::from_value(v)
}

fn claim_violation(pvc: &PersistentVolumeClaim, subject: Subject<'_>) -> Option<Violation> {
    let modes = AccessModes::from_optional(pvc.spec.as_ref().and_then(|s| s.access_modes.as_ref()));
    exclusive_rwop_violation(subject, &modes)
}

/// What `--mutate` did to one claim or template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationNote {
    pub document: usize,
    pub object: String,
    /// None when mutated; otherwise why not.
    pub skipped: Option<String>,
}

impl fmt::Display for MutationNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.skipped {
            None => write!(f, "{}: mutated to [ReadWriteOncePod]", self.object),
            Some(why) => write!(f, "{}: not mutated: {why}", self.object),
        }
    }
}

/// Applies M1 in place to the claims and StatefulSet claim templates in `doc`, as the mutating
/// webhook would on CREATE. Mutation is considered enabled: asking for it is the intent.
pub fn mutate_document(
    policy: &Policy,
    facts: &Facts,
    doc: &mut Value,
    document: usize,
) -> Result<Vec<MutationNote>, DocumentError> {
    let mut policy = policy.clone();
    policy.mutation.enabled = true;
    let mut notes = Vec::new();
    let objects: Vec<&mut Value> = match doc.get("kind").and_then(Value::as_str) {
        Some(kind) if kind.ends_with("List") && doc.get("items").is_some_and(Value::is_array) => {
            doc.get_mut("items")
                .and_then(Value::as_array_mut)
                .map(|items| items.iter_mut().collect())
                .unwrap_or_default()
        }
        _ => vec![doc],
    };
    for obj in objects {
        let kind = str_at(obj, "/kind").unwrap_or_default().to_owned();
        let namespace = str_at(obj, "/metadata/namespace").map(str::to_owned);
        let name = str_at(obj, "/metadata/name").unwrap_or_default().to_owned();
        let targets: Vec<(&mut Value, String)> = match kind.as_str() {
            "PersistentVolumeClaim" => {
                let label = format!(
                    "PersistentVolumeClaim/{}/{name}",
                    namespace.as_deref().unwrap_or("-")
                );
                vec![(obj, label)]
            }
            "StatefulSet" => obj
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .map(|ts| {
                    ts.iter_mut()
                        .enumerate()
                        .map(|(i, t)| {
                            let label = format!(
                                "StatefulSet/{}/{name} volumeClaimTemplates[{i}]",
                                namespace.as_deref().unwrap_or("-")
                            );
                            (t, label)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for (target, label) in targets {
            let pvc = decode_claim(target).map_err(|e| DocumentError {
                document,
                message: format!("{label} does not decode: {e}"),
            })?;
            let decision = mutate_claim(
                &policy,
                facts,
                &Operation::Create,
                &pvc,
                namespace.as_deref(),
            );
            if let Some(patch) = &decision.patch {
                json_patch::patch(target, patch).map_err(|e| DocumentError {
                    document,
                    message: format!("{label}: cannot apply the mutation: {e}"),
                })?;
            }
            notes.push(MutationNote {
                document,
                object: label,
                skipped: decision.explanation,
            });
        }
    }
    Ok(notes)
}

/// Serializes documents back to a YAML stream.
pub fn to_yaml_stream(docs: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        let text = serde_saphyr::to_string(doc).map_err(|e| e.to_string())?;
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
