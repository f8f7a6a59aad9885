//! The in-tree engine: the policy as ValidatingAdmissionPolicy (V2, W1) and
//! MutatingAdmissionPolicy (M1, M2) objects, which the API server evaluates itself, in CEL,
//! with no webhook to call.
//!
//! The objects decide as `rwop-guard serve --no-cluster` does with the same policy file: same
//! decision, same object after mutation, same message text (after the API server's prefix),
//! same audit annotations (the e2e suite's `intree` cases prove it case by case on a real API
//! server). The messages here are the ones of `policy::rules`, written as CEL; keep them in step.
//!
//! What CEL cannot do, and the webhook without cluster access does not do either: read another
//! object. So M1 mutates only claims naming a class listed in `mutation.storageClasses` (not by
//! CSI provisioner, not the cluster's default class for a claim without `storageClassName`, not
//! a claim naming a volume). A MutatingAdmissionPolicy returns no warnings and no audit
//! annotations. V1 is not exported: the API server itself refuses ReadWriteOncePod mixed with
//! other modes on every create and update, before any validating admission runs (DESIGN §1), so
//! a V1 policy could never fire.
//!
//! Pure: policy in, objects out (as `k8s_openapi` types, serialized to JSON values).

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    AuditAnnotation, JSONPatch, MatchCondition, MatchResources, MutatingAdmissionPolicy,
    MutatingAdmissionPolicyBinding, MutatingAdmissionPolicyBindingSpec,
    MutatingAdmissionPolicySpec, Mutation, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use serde_json::Value;

use crate::policy::{
    Action, MIGRATED_FROM_ANNOTATION, MIGRATION_ANNOTATION, MUTATED_FROM_ANNOTATION,
    OPT_OUT_ANNOTATION, Policy, TASK_URL, selector::NAMESPACE_NAME_LABEL,
};

/// The API version of MutatingAdmissionPolicy to print. The two have the same schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapVersion {
    /// `admissionregistration.k8s.io/v1`: Kubernetes 1.36 and later (GA).
    V1,
    /// `admissionregistration.k8s.io/v1beta1`: Kubernetes 1.34 and 1.35, with the feature gate
    /// `MutatingAdmissionPolicy` and `--runtime-config=admissionregistration.k8s.io/v1beta1=true`.
    V1beta1,
}

impl MapVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            MapVersion::V1 => "admissionregistration.k8s.io/v1",
            MapVersion::V1beta1 => "admissionregistration.k8s.io/v1beta1",
        }
    }
}

/// What to export, beyond the policy itself.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Prefix of every object's name (`<prefix>-access-modes`, …): the chart uses its full name.
    pub prefix: String,
    /// None: no MutatingAdmissionPolicy at all (M1 and M2 stay with the webhook, or off).
    pub map_version: Option<MapVersion>,
    /// Export M2 (keep [ReadWriteOncePod] over re-applied [ReadWriteOnce] manifests).
    pub keep_on_reapply: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            prefix: "rwop-guard".to_owned(),
            map_version: Some(MapVersion::V1beta1),
            keep_on_reapply: true,
        }
    }
}

/// The objects, in the order to apply them (each policy before its binding), and notes on what
/// of the policy they do not carry (for stderr).
#[derive(Clone, Debug, Default)]
pub struct Export {
    pub objects: Vec<Value>,
    pub notes: Vec<String>,
}

/// Suffixes of the objects' names, after [`ExportOptions::prefix`] and a dash.
pub const ACCESS_MODES: &str = "access-modes";
pub const TRANSITION_WARNINGS: &str = "transition-warnings";
pub const MUTATE: &str = "mutate";
pub const KEEP: &str = "keep";

/// The in-tree objects for `policy`.
pub fn export(policy: &Policy, options: &ExportOptions) -> Export {
    let mut out = Export::default();
    let name = |suffix: &str| format!("{}-{suffix}", options.prefix);
    let action = match policy.validation.action {
        Action::Deny => "Deny",
        Action::Warn => "Warn",
    };
    push_validating(&mut out, access_modes(policy, &name(ACCESS_MODES)), action);
    push_validating(
        &mut out,
        transition_warnings(&name(TRANSITION_WARNINGS)),
        "Warn",
    );

    let m = &policy.mutation;
    let Some(version) = options.map_version else {
        if m.enabled || options.keep_on_reapply {
            out.notes.push(
                "no MutatingAdmissionPolicy printed (--map-version none): M1 and M2 need the \
                 webhook"
                    .to_owned(),
            );
        }
        return out;
    };
    if m.enabled {
        if m.storage_classes.is_empty() {
            out.notes.push(
                "M1 not exported: mutation.storageClasses is empty, and in-tree M1 mutates only \
                 claims of listed classes (CSI provisioners and the default class need the \
                 webhook with cluster access)"
                    .to_owned(),
            );
        } else {
            out.notes.push(format!(
                "M1 in-tree mutates only claims whose storageClassName is listed ({}); claims \
                 without storageClassName (the default class), of other CSI classes, or naming \
                 a volume are left as written",
                m.storage_classes
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            push_mutating(&mut out, mutate(policy, &name(MUTATE)), version);
        }
        if !m.provisioners.allow.is_empty() || !m.provisioners.deny.is_empty() {
            out.notes.push(
                "mutation.provisioners is not exported: it needs the StorageClasses (the webhook \
                 with cluster access)"
                    .to_owned(),
            );
        }
    }
    if options.keep_on_reapply {
        push_mutating(&mut out, keep(&name(KEEP)), version);
    }
    out
}

fn push_validating(out: &mut Export, policy: ValidatingAdmissionPolicy, action: &str) {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: named(&name),
        spec: ValidatingAdmissionPolicyBindingSpec {
            policy_name: name,
            validation_actions: vec![action.to_owned()],
            ..Default::default()
        },
    };
    out.objects.push(to_value(&policy));
    out.objects.push(to_value(&binding));
}

fn push_mutating(out: &mut Export, policy: MutatingAdmissionPolicy, version: MapVersion) {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let binding = MutatingAdmissionPolicyBinding {
        metadata: named(&name),
        spec: Some(MutatingAdmissionPolicyBindingSpec {
            policy_name: Some(name),
            ..Default::default()
        }),
    };
    for mut object in [to_value(&policy), to_value(&binding)] {
        object["apiVersion"] = version.api_version().into();
        out.objects.push(object);
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    // k8s-openapi's types serialize to JSON without fail (strings, lists and maps only).
    serde_json::to_value(object).unwrap_or(Value::Null)
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn rule(operations: &[&str], resources: &[&str]) -> NamedRuleWithOperations {
    let strings = |s: &[&str]| Some(s.iter().map(|s| (*s).to_owned()).collect());
    NamedRuleWithOperations {
        api_groups: strings(&[""]),
        api_versions: strings(&["v1"]),
        operations: strings(operations),
        resources: strings(resources),
        ..Default::default()
    }
}

fn var(name: &str, expression: impl Into<String>) -> Variable {
    Variable {
        name: name.to_owned(),
        expression: expression.into(),
    }
}

fn condition(name: &str, expression: impl Into<String>) -> MatchCondition {
    MatchCondition {
        name: name.to_owned(),
        expression: expression.into(),
    }
}

/// A CEL string literal (single-quoted) of `text`.
fn lit(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL list literal of strings.
fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| lit(i.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// `spec.accessModes` of `object` (`object` or `oldObject`), absent as empty.
fn modes_of(object: &str) -> String {
    format!("has({object}.spec.accessModes) ? {object}.spec.accessModes : []")
}

/// True when the list variable `v` holds `mode` and nothing else (duplicates allowed).
fn only(v: &str, mode: &str) -> String {
    format!("size({v}) > 0 && {v}.all(m, m == {})", lit(mode))
}

/// The mode set as the webhook prints it: `[ReadWriteOnce, ReadWriteOncePod]`, known modes in
/// their canonical order, each once. (The API server refuses unknown modes before admission, so
/// the webhook's sorting of unknown names is not needed here; they would follow in their order.)
fn modes_text(v: &str) -> String {
    let known = list(crate::policy::AccessMode::ALL.map(|m| m.as_str()));
    format!("'[' + ({known}.filter(m, m in {v}) + {v}.filter(m, !(m in {known}))).join(', ') + ']'")
}

/// A CEL condition true when `spec.accessModes` differs as a set between the two objects.
fn modes_change_condition() -> String {
    format!(
        "!sets.equivalent({}, {})",
        paren(&modes_of("oldObject")),
        paren(&modes_of("object"))
    )
}

fn paren(s: &str) -> String {
    format!("({s})")
}

/// The variables every volume policy starts with.
fn volume_variables() -> Vec<Variable> {
    vec![
        var("newModes", modes_of("object")),
        var("oldModes", modes_of("oldObject")),
        var(
            "rwoToRwop",
            format!(
                "{} && {}",
                only("variables.oldModes", "ReadWriteOnce"),
                only("variables.newModes", "ReadWriteOncePod")
            ),
        ),
        var(
            "subject",
            r#"'PersistentVolume "' + object.metadata.name + '"'"#,
        ),
    ]
}

/// V2 on PersistentVolume updates (`policy::rules::transition_violation`, with the rollback
/// exception and the undo hint of `validate_volume`).
fn access_modes(policy: &Policy, name: &str) -> ValidatingAdmissionPolicy {
    let annotations = |object: &str| format!("has({object}.metadata.annotations)");
    let mut variables = volume_variables();
    variables.extend([
        var("oldText", modes_text("variables.oldModes")),
        var("newText", modes_text("variables.newModes")),
        // `migrate --rollback` moving a volume back: recorded (the state written by `migrate`
        // is compact JSON with a top-level "target") and unbound.
        var(
            "rollback",
            format!(
                "{} && {} && {} && {mig} in oldObject.metadata.annotations && \
                 oldObject.metadata.annotations[{mig}].matches({re}) && \
                 (!has(object.spec.claimRef) || !has(object.spec.claimRef.uid) || \
                 object.spec.claimRef.uid == '')",
                only("variables.oldModes", "ReadWriteOncePod"),
                only("variables.newModes", "ReadWriteOnce"),
                annotations("oldObject"),
                mig = lit(MIGRATION_ANNOTATION),
                re = lit(r#""target"\s*:\s*"ReadWriteOnce""#),
            ),
        ),
        var(
            "v2",
            "!sets.equivalent(variables.oldModes, variables.newModes) && \
             !variables.rwoToRwop && !variables.rollback",
        ),
        var(
            "hint",
            format!(
                "{} && {} && {marker} in oldObject.metadata.annotations ? {text} + \
                 (has(oldObject.spec.claimRef) && has(oldObject.spec.claimRef.namespace) && \
                 has(oldObject.spec.claimRef.name) ? oldObject.spec.claimRef.namespace + '/' + \
                 oldObject.spec.claimRef.name : 'NAMESPACE/CLAIM') + ' --rollback' : ''",
                only("variables.oldModes", "ReadWriteOncePod"),
                annotations("oldObject"),
                marker = lit(MIGRATED_FROM_ANNOTATION),
                text = lit(
                    "; this volume was moved to [ReadWriteOncePod] by rwop-guard migrate; to undo \
                     that safely (claim unbound and rebound, consumers scaled down and back), \
                     run: rwop-guard migrate "
                ),
            ),
        ),
        var(
            "message",
            format!(
                "variables.subject + ': access mode change ' + variables.oldText + ' -> ' + \
                 variables.newText + ('ReadWriteOncePod' in variables.oldModes || \
                 'ReadWriteOncePod' in variables.newModes ? {involved} : {other} + \
                 variables.oldText) + variables.hint",
                involved = lit(&format!(
                    " is not allowed; only [ReadWriteOnce] -> [ReadWriteOncePod] is supported \
                     ({TASK_URL})"
                )),
                other = lit(
                    " is not allowed: it does not involve ReadWriteOncePod, and the only change \
                     rwop-guard allows is [ReadWriteOnce] -> [ReadWriteOncePod] (nothing checks \
                     other changes against the claim bound to the volume); keep "
                ),
            ),
        ),
    ]);
    ValidatingAdmissionPolicy {
        metadata: named(name),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![rule(&["UPDATE"], &["persistentvolumes"])]),
                ..Default::default()
            }),
            match_conditions: Some(vec![condition(
                "access-modes-change",
                modes_change_condition(),
            )]),
            variables: Some(variables),
            validations: Some(vec![Validation {
                expression: "!variables.v2".to_owned(),
                message_expression: Some("variables.message".to_owned()),
                // Shown only if the message expression fails.
                message: Some(format!(
                    "this access mode change is not allowed; only [ReadWriteOnce] -> \
                     [ReadWriteOncePod] is supported ({TASK_URL})"
                )),
                reason: Some("Forbidden".to_owned()),
            }]),
            audit_annotations: Some(vec![
                AuditAnnotation {
                    key: "action".to_owned(),
                    value_expression: format!(
                        "variables.v2 ? {} : ''",
                        lit(policy.validation.action.as_str())
                    ),
                },
                AuditAnnotation {
                    key: "v2".to_owned(),
                    value_expression: "variables.v2 ? variables.message : ''".to_owned(),
                },
                AuditAnnotation {
                    key: "rollback".to_owned(),
                    value_expression: format!(
                        "variables.rollback ? {} : ''",
                        lit(
                            "[ReadWriteOncePod] -> [ReadWriteOnce] by a recorded rwop-guard \
                             migrate --rollback"
                        )
                    ),
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// W1: the warnings on an allowed [ReadWriteOnce] -> [ReadWriteOncePod] volume change
/// (`policy::rules::transition_warnings`), each a validation of a `[Warn]` binding.
fn transition_warnings(name: &str) -> ValidatingAdmissionPolicy {
    let mut variables = volume_variables();
    variables.extend([
        var(
            "reclaimDelete",
            "has(object.spec.persistentVolumeReclaimPolicy) && \
             object.spec.persistentVolumeReclaimPolicy == 'Delete'",
        ),
        var(
            "reclaimMessage",
            format!(
                "variables.subject + {}",
                lit(
                    ": reclaim policy is Delete, so deleting its claim to finish the change \
                     deletes the volume and its data; set persistentVolumeReclaimPolicy to \
                     Retain first"
                )
            ),
        ),
        var(
            "bound",
            "has(object.spec.claimRef) && has(object.spec.claimRef.uid)",
        ),
        var(
            "boundMessage",
            format!(
                "variables.subject + ': still bound to claim \"' + \
                 (has(object.spec.claimRef.namespace) ? object.spec.claimRef.namespace : '') + \
                 '/' + (has(object.spec.claimRef.name) ? object.spec.claimRef.name : '') + {}",
                lit(
                    "\" (spec.claimRef.uid is set); the claim keeps its old access modes until \
                     it is deleted, claimRef.uid is cleared and it is recreated with \
                     [ReadWriteOncePod]"
                )
            ),
        ),
        var("notCsi", "!has(object.spec.csi)"),
        var(
            "notCsiMessage",
            format!(
                "variables.subject + {}",
                lit(
                    ": not a CSI volume; ReadWriteOncePod is only supported for CSI volumes, \
                     so pods using it may fail to start"
                )
            ),
        ),
        var(
            "warnings",
            "(variables.reclaimDelete ? [variables.reclaimMessage] : []) + \
             (variables.bound ? [variables.boundMessage] : []) + \
             (variables.notCsi ? [variables.notCsiMessage] : [])",
        ),
    ]);
    let warn = |flag: &str, message: &str, fallback: &str| Validation {
        expression: format!("!variables.{flag}"),
        message_expression: Some(format!("variables.{message}")),
        message: Some(fallback.to_owned()),
        reason: None,
    };
    ValidatingAdmissionPolicy {
        metadata: named(name),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![rule(&["UPDATE"], &["persistentvolumes"])]),
                ..Default::default()
            }),
            match_conditions: Some(vec![condition(
                "read-write-once-to-read-write-once-pod",
                format!(
                    "{} && {}",
                    paren(&only_expr("oldObject", "ReadWriteOnce")),
                    paren(&only_expr("object", "ReadWriteOncePod"))
                ),
            )]),
            variables: Some(variables),
            validations: Some(vec![
                warn(
                    "reclaimDelete",
                    "reclaimMessage",
                    "reclaim policy is Delete: set persistentVolumeReclaimPolicy to Retain first",
                ),
                warn(
                    "bound",
                    "boundMessage",
                    "still bound to its claim (spec.claimRef.uid is set)",
                ),
                warn(
                    "notCsi",
                    "notCsiMessage",
                    "not a CSI volume; ReadWriteOncePod is only supported for CSI volumes",
                ),
            ]),
            audit_annotations: Some(vec![AuditAnnotation {
                key: "w1".to_owned(),
                value_expression:
                    "size(variables.warnings) > 0 ? variables.warnings.join('; ') : ''".to_owned(),
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// `spec.accessModes` of `object` is exactly `{mode}` (a match condition cannot use variables).
fn only_expr(object: &str, mode: &str) -> String {
    format!(
        "has({object}.spec.accessModes) && size({object}.spec.accessModes) > 0 && \
         {object}.spec.accessModes.all(m, m == {})",
        lit(mode)
    )
}

/// The namespaces M1 applies in, as the API server's namespaceSelector: the policy's lists by
/// the name label every namespace carries, and its own selector.
fn mutation_namespaces(policy: &Policy) -> Option<LabelSelector> {
    let m = &policy.mutation;
    let by_name = |operator: &str, names: &BTreeSet<String>| LabelSelectorRequirement {
        key: NAMESPACE_NAME_LABEL.to_owned(),
        operator: operator.to_owned(),
        values: Some(names.iter().cloned().collect()),
    };
    let mut expressions = Vec::new();
    if !m.exclude_namespaces.is_empty() {
        expressions.push(by_name("NotIn", &m.exclude_namespaces));
    }
    if !m.namespaces.is_empty() {
        expressions.push(by_name("In", &m.namespaces));
    }
    let given = m.namespace_selector.clone().unwrap_or_default();
    expressions.extend(given.match_expressions.unwrap_or_default());
    let labels = given.match_labels.filter(|l| !l.is_empty());
    if expressions.is_empty() && labels.is_none() {
        return None;
    }
    Some(LabelSelector {
        match_expressions: (!expressions.is_empty()).then_some(expressions),
        match_labels: labels,
    })
}

/// The JSONPatch operation that records `key: ReadWriteOnce` as an annotation: the key alone
/// when the object has annotations (adding the whole map would replace them), else the map.
fn annotate(key_expr: &str) -> String {
    format!(
        "has(object.metadata.annotations) ? \
         [JSONPatch{{op: 'add', path: '/metadata/annotations/' + jsonpatch.escapeKey({key_expr}), \
         value: 'ReadWriteOnce'}}] : \
         [JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{{key_expr}: 'ReadWriteOnce'}}}}]"
    )
}

const REPLACE_MODES: &str =
    "[JSONPatch{op: 'replace', path: '/spec/accessModes', value: ['ReadWriteOncePod']}]";

/// M1 (`policy::mutation::mutate_claim` without cluster facts): a new claim asking for exactly
/// [ReadWriteOnce], of a listed class, in a selected namespace, not opted out, with no
/// `volumeName` and no `selector`, gets [ReadWriteOncePod] and the `mutated-from` annotation.
fn mutate(policy: &Policy, name: &str) -> MutatingAdmissionPolicy {
    let opt_out = lit(OPT_OUT_ANNOTATION);
    let conditions = vec![
        condition(
            "asks-for-read-write-once",
            only_expr("object", "ReadWriteOnce"),
        ),
        condition(
            "not-opted-out",
            format!(
                "!has(object.metadata.annotations) || !({opt_out} in object.metadata.annotations) \
                 || object.metadata.annotations[{opt_out}].lowerAscii() != 'false'"
            ),
        ),
        condition(
            "no-selector",
            "!has(object.spec.selector) || (!has(object.spec.selector.matchLabels) && \
             !has(object.spec.selector.matchExpressions))",
        ),
        condition(
            "no-volume-name",
            "!has(object.spec.volumeName) || object.spec.volumeName == ''",
        ),
        condition(
            "listed-storage-class",
            format!(
                "has(object.spec.storageClassName) && object.spec.storageClassName in {}",
                list(&policy.mutation.storage_classes)
            ),
        ),
    ];
    mutating_policy(
        name,
        rule(&["CREATE"], &["persistentvolumeclaims"]),
        mutation_namespaces(policy),
        conditions,
        format!(
            "{REPLACE_MODES} + ({})",
            annotate(&lit(MUTATED_FROM_ANNOTATION))
        ),
    )
}

/// M2 (`policy::reapply::keep_rwop_on_reapply`): an update that sends [ReadWriteOnce] over a
/// claim or volume rwop-guard changed to [ReadWriteOncePod] keeps [ReadWriteOncePod], and the
/// marker annotation if the update dropped it.
fn keep(name: &str) -> MutatingAdmissionPolicy {
    let (migrated, mutated) = (lit(MIGRATED_FROM_ANNOTATION), lit(MUTATED_FROM_ANNOTATION));
    let marked = |key: &str| {
        format!(
            "({key} in oldObject.metadata.annotations && oldObject.metadata.annotations[{key}] == 'ReadWriteOnce')"
        )
    };
    let conditions = vec![
        condition(
            "re-applies-read-write-once",
            only_expr("object", "ReadWriteOnce"),
        ),
        condition(
            "was-read-write-once-pod",
            only_expr("oldObject", "ReadWriteOncePod"),
        ),
        condition(
            "changed-by-rwop-guard",
            format!(
                "has(oldObject.metadata.annotations) && ({} || {}) && !({} in \
                 oldObject.metadata.annotations)",
                marked(&migrated),
                marked(&mutated),
                lit(MIGRATION_ANNOTATION)
            ),
        ),
    ];
    // The marker the old object carries (migrated-from first, as the webhook looks).
    let key = format!("({} ? {migrated} : {mutated})", marked(&migrated));
    let mut policy = mutating_policy(
        name,
        rule(
            &["UPDATE"],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        None,
        conditions,
        format!(
            "{REPLACE_MODES} + (has(object.metadata.annotations) && variables.key in \
             object.metadata.annotations ? [] : ({}))",
            annotate("variables.key")
        ),
    );
    if let Some(spec) = policy.spec.as_mut() {
        spec.variables = Some(vec![var("key", key)]);
    }
    policy
}

fn mutating_policy(
    name: &str,
    rule: NamedRuleWithOperations,
    namespaces: Option<LabelSelector>,
    conditions: Vec<MatchCondition>,
    patch: String,
) -> MutatingAdmissionPolicy {
    MutatingAdmissionPolicy {
        metadata: named(name),
        spec: Some(MutatingAdmissionPolicySpec {
            // As the chart's mutating webhooks: if the policy cannot be evaluated, the object
            // is admitted as written (and still validated).
            failure_policy: Some("Ignore".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![rule]),
                namespace_selector: namespaces,
                ..Default::default()
            }),
            match_conditions: Some(conditions),
            mutations: Some(vec![Mutation {
                patch_type: "JSONPatch".to_owned(),
                json_patch: Some(JSONPatch {
                    expression: Some(patch),
                }),
                apply_configuration: None,
            }]),
            reinvocation_policy: Some("Never".to_owned()),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(lit(r#"a'b\c"d"#), r#"'a\'b\\c"d'"#);
        assert_eq!(list(["x", "y"]), "['x', 'y']");
    }
}
