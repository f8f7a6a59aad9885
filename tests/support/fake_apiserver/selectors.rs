//! What a list or watch selects (namespace, label selector) and the decoded query.

use super::*;

/// Parses `k=v,k2=v2`, the form the tests and `migrate -l` send. Other forms (`k in (a,b)`,
/// `k`, `!k`, `==`, `!=`, ...) are not implemented: they answer 400, as a malformed selector does.
pub(super) fn parse_label_selector(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    let word = |w: &str, extra: char| {
        let w = w.trim();
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || c == extra;
        w.chars().all(ok).then(|| w.to_string())
    };
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|term| {
            term.split_once('=')
                .and_then(|(k, v)| Some((word(k, '/').filter(|k| !k.is_empty())?, word(v, '.')?)))
                .ok_or_else(|| {
                    ApiError::not_implemented(&format!("label selector {s:?} (only k=v)"))
                })
        })
        .collect()
}

/// What a list or watch selects: namespace, labels.
#[derive(Clone, Debug, Default)]
pub(super) struct Filter {
    pub(super) namespace: Option<String>,
    /// `fieldSelector=metadata.name=NAME`, what `kube::runtime::wait::await_condition` sends.
    pub(super) field_name: Option<String>,
    pub(super) labels: Vec<(String, String)>,
}

impl Filter {
    /// Of field selectors only `metadata.name=NAME` is implemented (the one the product sends,
    /// through `await_condition`); any other answers 400.
    pub(super) fn from_query(namespace: Option<&str>, q: &Query) -> Result<Self, ApiError> {
        let field_name = match q.get("fieldSelector").unwrap_or("") {
            "" => None,
            s => match s.strip_prefix("metadata.name=") {
                Some(n) if !n.contains(',') => Some(n.to_owned()),
                _ => return Err(ApiError::not_implemented(&format!("fieldSelector {s:?}"))),
            },
        };
        Ok(Filter {
            namespace: namespace.map(String::from),
            field_name,
            labels: parse_label_selector(q.get("labelSelector").unwrap_or(""))?,
        })
    }

    /// No label or field selector (the namespace of the URL does not count).
    pub(super) fn selects_everything(&self) -> bool {
        self.labels.is_empty() && self.field_name.is_none()
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let is = |want: &Option<String>, key| {
            want.as_deref()
                .is_none_or(|want| meta_str(obj, key).unwrap_or("") == want)
        };
        let labels = labels(obj);
        is(&self.namespace, "namespace")
            && is(&self.field_name, "name")
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Decoded query parameters (last value wins).
pub(super) struct Query(pub(super) HashMap<String, String>);

impl Query {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `true` or `1`, as kube and helm send flags.
    pub(super) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}
