//! Offline checks of manifests (what `rwop-guard check` runs): finds the PersistentVolumes,
//! PersistentVolumeClaims and StatefulSet `volumeClaimTemplates` in parsed documents and applies
//! rule V1 (and, on request, mutation M1). Reading files is the caller's business.

use std::fmt;

use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{
    Claim, Facts, HasAccessModes, Policy, Rule, Subject, Violation, Volume,
    exclusive_rwop_violation, mutate_claim,
};

/// One rule violation found in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestViolation {
    /// 1-based number of the document in its file (empty documents are not counted).
    pub document: usize,
    /// 1-based line of the object in its file: where its document starts, or where its item of
    /// a `List` starts.
    pub line: usize,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub rule: &'static str,
    pub message: String,
}

impl ManifestViolation {
    /// The object, as [`object_path`] prints it.
    pub fn object(&self) -> String {
        object_path(&self.kind, self.namespace.as_deref(), &self.name)
    }
}

/// How `check` names an object: `KIND/NAMESPACE/NAME`; a PersistentVolume (cluster-scoped)
/// `KIND/NAME`, an unset namespace `-`.
pub fn object_path(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match (namespace, kind) {
        (_, "PersistentVolume") => format!("{kind}/{name}"),
        (Some(ns), _) => format!("{kind}/{ns}/{name}"),
        (None, _) => format!("{kind}/-/{name}"),
    }
}

/// A document that cannot be checked: not YAML/JSON, or a PV/PVC that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {document} (line {line}): {message}")]
pub struct DocumentError {
    pub document: usize,
    pub line: usize,
    pub message: String,
}

/// One document of a stream and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// 1-based, counting non-empty documents.
    pub number: usize,
    /// 1-based line of its first content line.
    pub line: usize,
    pub value: Value,
    /// The line of each object [`objects`] yields: the document's, or each `List` item's.
    pub object_lines: Vec<usize>,
}

/// Parses a multi-document YAML stream (JSON is YAML too). Documents are split as kubectl
/// splits them (a line `---`, optionally followed by a comment), so one document that is not
/// valid is reported without losing the others. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Vec<Result<Document, DocumentError>> {
    let mut out = Vec::new();
    let mut number = 0;
    for (first_line, chunk) in split_documents(text) {
        let Some(offset) = chunk.lines().position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "---" && !t.starts_with("--- #")
        }) else {
            continue;
        };
        let line = first_line + offset;
        let values: Result<Vec<Value>, _> = serde_saphyr::from_multiple(chunk);
        match values {
            Err(e) => {
                number += 1;
                // The parser counts lines from the start of this document; the file's count is
                // what an editor shows.
                let at = e
                    .location()
                    .and_then(|l| usize::try_from(l.line()).ok())
                    .filter(|l| *l > 0)
                    .map(|l| first_line + l - 1);
                let text = e.without_snippet().to_string();
                let reason = text
                    .split_once(": ")
                    .filter(|(head, _)| head.contains("line ") && head.contains("column "))
                    .map_or(text.as_str(), |(_, rest)| rest);
                let reason = match reason.rfind(" at line ") {
                    Some(i) if reason[i..].contains(", column ") => &reason[..i],
                    _ => reason,
                };
                out.push(Err(DocumentError {
                    document: number,
                    line: at.unwrap_or(line),
                    message: format!("not valid YAML: {}", crate::one_line(reason)),
                }));
            }
            Ok(values) => {
                for value in values.into_iter().filter(|v| !v.is_null()) {
                    number += 1;
                    let object_lines = match items_of(&value) {
                        Some(items) => item_lines(chunk, first_line, items.len(), line),
                        None => vec![line],
                    };
                    out.push(Ok(Document {
                        number,
                        line,
                        value,
                        object_lines,
                    }));
                }
            }
        }
    }
    out
}

/// (first line number, text) of each `---`-separated part of `text`.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut parts = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 1, 0);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let rest = line.trim_end();
        let separator = rest.strip_prefix("---").is_some_and(|after| {
            let after = after.trim_start();
            after.is_empty() || after.starts_with('#')
        });
        if separator {
            parts.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    parts.push((start_line, &text[start..]));
    parts
}

/// The line of each item of a `List` document (its `items` sequence), or the document's line
/// for every item when they cannot be located.
fn item_lines(chunk: &str, first_line: usize, count: usize, fallback: usize) -> Vec<usize> {
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<serde_saphyr::Spanned<serde::de::IgnoredAny>>,
    }
    match serde_saphyr::from_str::<Items>(chunk) {
        Ok(parsed) if parsed.items.len() == count => parsed
            .items
            .iter()
            .map(|i| match usize::try_from(i.referenced.line()) {
                Ok(l) if l > 0 => first_line + l - 1,
                _ => fallback,
            })
            .collect(),
        _ => vec![fallback; count],
    }
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

/// V1 over one document; findings and errors carry its number and their object's line.
pub fn check_document(doc: &Document) -> Result<Vec<ManifestViolation>, DocumentError> {
    let mut findings = Vec::new();
    let document = doc.number;
    for (i, obj) in objects(&doc.value).into_iter().enumerate() {
        let line = doc.object_lines.get(i).copied().unwrap_or(doc.line);
        let kind = str_at(obj, "/kind").unwrap_or_default();
        let finding = |rule: Rule, message: String, name: &str| ManifestViolation {
            document,
            line,
            kind: kind.to_owned(),
            namespace: str_at(obj, "/metadata/namespace").map(str::to_owned),
            name: name.to_owned(),
            rule: rule.id(),
            message,
        };
        let undecodable = |what: &str, e: serde_json::Error| DocumentError {
            document,
            line,
            message: format!("{what} does not decode: {e}"),
        };
        match kind {
            "PersistentVolume" => {
                let pv =
                    Volume::deserialize(obj).map_err(|e| undecodable("PersistentVolume", e))?;
                let modes = pv.access_modes();
                if let Some(v) = exclusive_rwop_violation(Subject::volume(&pv.metadata), &modes) {
                    let name = Subject::volume(&pv.metadata).name;
                    findings.push(finding(v.rule, v.detail, name));
                }
            }
            "PersistentVolumeClaim" => {
                let pvc =
                    Claim::deserialize(obj).map_err(|e| undecodable("PersistentVolumeClaim", e))?;
                if let Some(v) = claim_violation(&pvc, Subject::claim(&pvc.metadata)) {
                    let name = Subject::claim(&pvc.metadata).name;
                    findings.push(finding(v.rule, v.detail, name));
                }
            }
            "StatefulSet" => {
                let name = str_at(obj, "/metadata/name").unwrap_or_default();
                for (i, template) in claim_templates(obj).iter().enumerate() {
                    let pvc = Claim::deserialize(template).map_err(|e| {
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

fn claim_violation(pvc: &Claim, subject: Subject<'_>) -> Option<Violation> {
    exclusive_rwop_violation(subject, &pvc.access_modes())
}

/// What `--mutate` did to one claim or template, or a caveat about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationNote {
    pub document: usize,
    pub line: usize,
    pub object: String,
    pub kind: NoteKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteKind {
    Mutated,
    /// Not mutated, and why.
    Skipped(String),
    /// Mutated, with something the user must know.
    Warning(String),
}

impl fmt::Display for MutationNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            NoteKind::Mutated => write!(f, "{}: mutated to [ReadWriteOncePod]", self.object),
            NoteKind::Skipped(why) => write!(f, "{}: not mutated: {why}", self.object),
            NoteKind::Warning(what) => write!(f, "{}: warning: {what}", self.object),
        }
    }
}

/// Applies M1 in place to the claims and StatefulSet claim templates in `doc`, as the mutating
/// webhook would on CREATE. Mutation is considered enabled: asking for it is the intent. Claims
/// that already are `[ReadWriteOncePod]` get no note.
pub fn mutate_document(
    policy: &Policy,
    facts: &Facts,
    doc: &mut Document,
) -> Result<Vec<MutationNote>, DocumentError> {
    let mut policy = policy.clone();
    policy.mutation.enabled = true;
    let mut notes = Vec::new();
    let document = doc.number;
    let lines = doc.object_lines.clone();
    let value = &mut doc.value;
    let objects: Vec<&mut Value> = match value.get("kind").and_then(Value::as_str) {
        Some(kind) if kind.ends_with("List") && value.get("items").is_some_and(Value::is_array) => {
            value
                .get_mut("items")
                .and_then(Value::as_array_mut)
                .map(|items| items.iter_mut().collect())
                .unwrap_or_default()
        }
        _ => vec![value],
    };
    for (i, obj) in objects.into_iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(doc.line);
        let note = |object: &str, kind: NoteKind| MutationNote {
            document,
            line,
            object: object.to_owned(),
            kind,
        };
        let kind = str_at(obj, "/kind").unwrap_or_default().to_owned();
        let namespace = str_at(obj, "/metadata/namespace").map(str::to_owned);
        let name = str_at(obj, "/metadata/name").unwrap_or_default().to_owned();
        let path = |kind: &str| object_path(kind, namespace.as_deref(), &name);
        let statefulset = kind == "StatefulSet";
        let targets: Vec<(&mut Value, String)> = match kind.as_str() {
            "PersistentVolumeClaim" => vec![(obj, path("PersistentVolumeClaim"))],
            "StatefulSet" => obj
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .map(|ts| {
                    ts.iter_mut()
                        .enumerate()
                        .map(|(i, t)| {
                            (
                                t,
                                format!("{} volumeClaimTemplates[{i}]", path("StatefulSet")),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut mutated_templates = 0;
        for (target, label) in targets {
            let pvc = Claim::deserialize(&*target).map_err(|e| DocumentError {
                document,
                line,
                message: format!("{label} does not decode: {e}"),
            })?;
            if pvc
                .access_modes()
                .is_only(crate::policy::AccessMode::ReadWriteOncePod)
            {
                continue;
            }
            let decision = mutate_claim(
                &policy,
                facts,
                &Operation::Create,
                &pvc,
                namespace.as_deref(),
            );
            match (&decision.patch, decision.explanation) {
                (Some(patch), _) => {
                    json_patch::patch(target, patch).map_err(|e| DocumentError {
                        document,
                        line,
                        message: format!("{label}: cannot apply the mutation: {e}"),
                    })?;
                    mutated_templates += usize::from(statefulset);
                    notes.push(note(&label, NoteKind::Mutated));
                }
                (None, why) => notes.push(note(
                    &label,
                    NoteKind::Skipped(why.unwrap_or_else(|| "no change needed".to_owned())),
                )),
            }
        }
        if mutated_templates > 0 {
            notes.push(note(
                &path("StatefulSet"),
                NoteKind::Warning(
                    "volumeClaimTemplates cannot be changed on an existing StatefulSet (the API \
                     server refuses the update): use this for a new StatefulSet; for one that \
                     exists, delete it with `kubectl delete statefulset --cascade=orphan` and \
                     create it again from this manifest (its pods and claims are kept), and move \
                     its existing claims with rwop-guard migrate"
                        .to_owned(),
                ),
            ));
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
