//! The policy file: what to enforce and where to mutate. Parsing is pure (text in, value out);
//! reading the file lives with the callers.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

/// What happens to a request that breaks a validation rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Reject the request (HTTP 403 to the client).
    #[default]
    Deny,
    /// Allow it, returning the message as a warning.
    Warn,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Warn => "warn",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    pub validation: ValidationPolicy,
    pub mutation: MutationPolicy,
    pub workloads: WorkloadPolicy,
}

/// Rule W2: workloads applied over ReadWriteOncePod claims they cannot run on.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadPolicy {
    pub action: WorkloadAction,
}

/// What W2 does with a workload that cannot run on its ReadWriteOncePod claims. An unquoted
/// `off` is YAML 1.1's `false`, and is read as `off`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "ActionWord")]
pub enum WorkloadAction {
    /// Allow it, with a warning kubectl prints.
    #[default]
    Warn,
    /// Reject it (pods that would stay Pending, a rollout that would hang); cautions (a
    /// CronJob's overlapping runs) stay warnings.
    Deny,
    /// Say nothing.
    Off,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidationPolicy {
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MutationPolicy {
    pub enabled: bool,
    /// StorageClasses known to support ReadWriteOncePod, whatever the cluster says.
    pub storage_classes: BTreeSet<String>,
    /// Namespaces to mutate in; empty means every namespace.
    pub namespaces: BTreeSet<String>,
    /// Namespaces never mutated, even when selected otherwise.
    pub exclude_namespaces: BTreeSet<String>,
    /// Only namespaces whose labels match (Kubernetes label selector semantics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    pub provisioners: ProvisionerPolicy,
}

impl Default for MutationPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            storage_classes: BTreeSet::new(),
            namespaces: BTreeSet::new(),
            exclude_namespaces: BTreeSet::from(["kube-system".to_owned()]),
            namespace_selector: None,
            provisioners: ProvisionerPolicy::default(),
        }
    }
}

/// Overrides for the "CSI driver" test on a StorageClass's provisioner.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProvisionerPolicy {
    /// Treat these as supporting ReadWriteOncePod (e.g. in-tree names served by CSI migration).
    pub allow: BTreeSet<String>,
    /// Never mutate claims of classes with these provisioners.
    pub deny: BTreeSet<String>,
}

/// `warn`, `deny`, `off`, or the boolean an unquoted `off` parses to.
#[derive(Deserialize)]
#[serde(untagged)]
enum ActionWord {
    Word(String),
    Bool(bool),
}

impl TryFrom<ActionWord> for WorkloadAction {
    type Error = String;
    fn try_from(word: ActionWord) -> Result<Self, String> {
        match word {
            ActionWord::Word(w) if w == "warn" => Ok(WorkloadAction::Warn),
            ActionWord::Word(w) if w == "deny" => Ok(WorkloadAction::Deny),
            ActionWord::Word(w) if w == "off" => Ok(WorkloadAction::Off),
            ActionWord::Bool(false) => Ok(WorkloadAction::Off),
            ActionWord::Word(w) => Err(format!(
                "unknown variant `{w}`, expected one of `warn`, `deny`, `off`"
            )),
            ActionWord::Bool(true) => {
                Err("expected one of `warn`, `deny`, `off`, found a boolean true".to_owned())
            }
        }
    }
}

/// A policy file that cannot be used. Always names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: not valid YAML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl Policy {
    /// Parses a policy document. `origin` (usually the file path) is used in error messages.
    /// An empty document is the default policy.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| PolicyError::Syntax {
                origin: origin.to_owned(),
                message: crate::one_line(&e.to_string()),
            })?;
        if value.is_null() {
            return Ok(Policy::default());
        }
        if !value.is_object() {
            return Err(PolicyError::Invalid {
                origin: origin.to_owned(),
                key: "(top level)".to_owned(),
                message:
                    "expected a mapping with the keys `validation`, `mutation` and `workloads`"
                        .to_owned(),
            });
        }
        let policy: Policy = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            PolicyError::Invalid {
                origin: origin.to_owned(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                message: crate::one_line(&e.into_inner().to_string()),
            }
        })?;
        policy
            .check()
            .map_err(|(key, message)| PolicyError::Invalid {
                origin: origin.to_owned(),
                key,
                message,
            })?;
        Ok(policy)
    }

    /// Checks what serde cannot: names that can never match and malformed selectors.
    fn check(&self) -> Result<(), (String, String)> {
        let m = &self.mutation;
        for (key, names) in [
            ("mutation.storageClasses", &m.storage_classes),
            ("mutation.namespaces", &m.namespaces),
            ("mutation.excludeNamespaces", &m.exclude_namespaces),
            ("mutation.provisioners.allow", &m.provisioners.allow),
            ("mutation.provisioners.deny", &m.provisioners.deny),
        ] {
            if let Some(bad) = names.iter().find(|n| n.trim().is_empty() || n.trim() != *n) {
                return Err((
                    key.to_owned(),
                    format!("{bad:?} is not a valid name (empty or surrounded by spaces)"),
                ));
            }
        }
        if let Some(both) = m
            .provisioners
            .allow
            .intersection(&m.provisioners.deny)
            .next()
        {
            return Err((
                "mutation.provisioners".to_owned(),
                format!("provisioner {both:?} is both allowed and denied"),
            ));
        }
        if let Some(selector) = &m.namespace_selector {
            super::selector::check(selector)
                .map_err(|msg| ("mutation.namespaceSelector".to_owned(), msg))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_policy() {
        let p = Policy::from_yaml("", "p.yaml").unwrap();
        assert_eq!(p.validation.action, Action::Deny);
        assert!(!p.mutation.enabled);
        assert!(p.mutation.storage_classes.is_empty());
        assert!(p.mutation.namespaces.is_empty());
        assert_eq!(
            p.mutation.exclude_namespaces.iter().collect::<Vec<_>>(),
            ["kube-system"]
        );
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn full_policy_parses() {
        let p = Policy::from_yaml(
            "validation:\n  action: warn\nmutation:\n  enabled: true\n  storageClasses: [fast-csi]\n  namespaces: [shop]\n  excludeNamespaces: []\n  namespaceSelector:\n    matchLabels: {team: a}\n  provisioners:\n    allow: [kubernetes.io/gce-pd]\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(p.validation.action, Action::Warn);
        assert!(p.mutation.enabled);
        assert!(p.mutation.storage_classes.contains("fast-csi"));
        assert!(p.mutation.exclude_namespaces.is_empty());
        assert!(p.mutation.namespace_selector.is_some());
        assert!(
            p.mutation
                .provisioners
                .allow
                .contains("kubernetes.io/gce-pd")
        );
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = Policy::from_yaml("mutation:\n  enable: true\n", "/etc/p.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/p.yaml: key `mutation"), "{msg}");
        assert!(msg.contains("enable"), "{msg}");
    }

    #[test]
    fn bad_value_names_key_and_file() {
        let err = Policy::from_yaml("validation:\n  action: block\n", "p.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.yaml: key `validation.action`"), "{msg}");
        assert!(msg.contains("block"), "{msg}");

        let err = Policy::from_yaml("mutation:\n  enabled: maybe\n", "p.yaml").unwrap_err();
        assert!(err.to_string().contains("`mutation.enabled`"), "{err}");

        let err = Policy::from_yaml("mutation:\n  storageClasses: [\"\"]\n", "p.yaml").unwrap_err();
        assert!(
            err.to_string().contains("`mutation.storageClasses`"),
            "{err}"
        );
    }

    #[test]
    fn workloads_action_reads_every_word_and_an_unquoted_off() {
        for (text, want) in [
            ("", WorkloadAction::Warn),
            ("workloads:\n  action: deny\n", WorkloadAction::Deny),
            ("workloads:\n  action: \"off\"\n", WorkloadAction::Off),
            ("workloads:\n  action: off\n", WorkloadAction::Off),
        ] {
            let p = Policy::from_yaml(text, "p.yaml").unwrap();
            assert_eq!(p.workloads.action, want, "{text}");
        }
        let err = Policy::from_yaml("workloads:\n  action: block\n", "p.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.yaml: key `workloads.action`"), "{msg}");
        assert!(msg.contains("block") && msg.contains("`off`"), "{msg}");
        let err = Policy::from_yaml("workloads:\n  action: on\n", "p.yaml").unwrap_err();
        assert!(err.to_string().contains("`workloads.action`"), "{err}");
    }

    #[test]
    fn bad_selector_is_rejected() {
        let err = Policy::from_yaml(
            "mutation:\n  namespaceSelector:\n    matchExpressions:\n    - {key: team, operator: Near}\n",
            "p.yaml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("mutation.namespaceSelector"),
            "{err}"
        );
        assert!(err.to_string().contains("Near"), "{err}");
    }

    #[test]
    fn not_yaml_is_a_syntax_error() {
        let err = Policy::from_yaml("validation: [unclosed\n", "p.yaml").unwrap_err();
        assert!(matches!(err, PolicyError::Syntax { .. }), "{err}");
        assert!(err.to_string().starts_with("p.yaml: not valid YAML"));
        let err = Policy::from_yaml("- a\n- b\n", "p.yaml").unwrap_err();
        assert!(err.to_string().contains("(top level)"), "{err}");
    }
}
