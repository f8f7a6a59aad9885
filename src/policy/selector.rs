//! Label selectors of the policy (a webhook's namespaceSelector): what the API server refuses,
//! and matching, which is kube's.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

/// Rejects selectors the API server would reject: unknown operators, missing or extra values.
pub fn check(selector: &LabelSelector) -> Result<(), String> {
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} needs at least one value",
                    expr.operator
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} takes no values",
                    expr.operator
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "matchExpressions[{i}]: unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                ));
            }
        }
        if expr.key.is_empty() {
            return Err(format!("matchExpressions[{i}]: key is empty"));
        }
    }
    Ok(())
}

/// The label every namespace carries: its own name (set by the API server since 1.22).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// True when the selector reads no label but the namespace's name label (an empty selector
/// reads none): it can be evaluated from the name alone, without the namespace's labels.
pub fn reads_only_the_name(selector: &LabelSelector) -> bool {
    let label_keys = selector.match_labels.iter().flatten().map(|(k, _)| k);
    let expression_keys = selector.match_expressions.iter().flatten().map(|e| &e.key);
    label_keys
        .chain(expression_keys)
        .all(|k| k == NAMESPACE_NAME_LABEL)
}

/// True when `labels` match (kube's selector semantics, which are the API server's). An empty
/// selector matches everything; one that [`check`] would refuse matches nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: op.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn selectors_that_read_only_the_name_label() {
        assert!(reads_only_the_name(&LabelSelector::default()));
        let by_name = LabelSelector {
            match_expressions: Some(vec![expr(NAMESPACE_NAME_LABEL, "NotIn", &["kube-system"])]),
            match_labels: Some([(NAMESPACE_NAME_LABEL.to_owned(), "shop".to_owned())].into()),
        };
        assert!(reads_only_the_name(&by_name));
        let by_team = LabelSelector {
            match_labels: Some([("team".to_owned(), "db".to_owned())].into()),
            ..LabelSelector::default()
        };
        assert!(!reads_only_the_name(&by_team));
        let mixed = LabelSelector {
            match_expressions: Some(vec![
                expr(NAMESPACE_NAME_LABEL, "In", &["shop"]),
                expr("team", "Exists", &[]),
            ]),
            ..LabelSelector::default()
        };
        assert!(!reads_only_the_name(&mixed));
    }

    #[test]
    fn empty_selector_matches_all() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn operators_follow_kubernetes() {
        let l = labels(&[("team", "a"), ("tier", "db")]);
        let sel = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        assert!(matches(&sel(expr("team", "In", &["a", "b"])), &l));
        assert!(!matches(&sel(expr("team", "In", &["b"])), &l));
        assert!(!matches(&sel(expr("missing", "In", &["a"])), &l));
        assert!(matches(&sel(expr("team", "NotIn", &["b"])), &l));
        assert!(!matches(&sel(expr("team", "NotIn", &["a"])), &l));
        // NotIn matches objects without the key, as in Kubernetes.
        assert!(matches(&sel(expr("missing", "NotIn", &["a"])), &l));
        assert!(matches(&sel(expr("tier", "Exists", &[])), &l));
        assert!(!matches(&sel(expr("tier", "DoesNotExist", &[])), &l));
        assert!(matches(&sel(expr("missing", "DoesNotExist", &[])), &l));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let l = labels(&[("team", "a")]);
        let s = LabelSelector {
            match_labels: Some(labels(&[("team", "a")])),
            match_expressions: Some(vec![expr("tier", "Exists", &[])]),
        };
        assert!(!matches(&s, &l));
        assert!(matches(&s, &labels(&[("team", "a"), ("tier", "x")])));
    }

    #[test]
    fn check_rejects_what_the_api_server_rejects() {
        let sel = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        assert!(check(&sel(expr("a", "In", &[]))).is_err());
        assert!(check(&sel(expr("a", "Exists", &["x"]))).is_err());
        assert!(check(&sel(expr("a", "Near", &["x"]))).is_err());
        assert!(check(&sel(expr("", "Exists", &[]))).is_err());
        assert!(check(&sel(expr("a", "NotIn", &["x"]))).is_ok());
    }
}
