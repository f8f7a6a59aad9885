//! What a list or watch selects (namespace, object name, label selector) and the decoded
//! query.

use super::*;

/// One requirement of a label selector, in the forms tests and the product send (`migrate -l`).
#[derive(Clone, Debug)]
pub(super) enum LabelReq {
    Eq(String, String),
    In(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelReq {
    pub(super) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// Splits at the commas outside parentheses.
pub(super) fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parses `k=v`, `k in (a,b)`, `k` and `!k`. Other operators (`==`, `!=`, `notin`, `>`, `<`)
/// are not implemented: they answer 400, as a malformed selector does.
pub(super) fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(&format!(
            "unable to parse requirement: {why} (the fake implements k=v, k in (a,b), k, !k): {s:?}"
        ))
    };
    let word = |w: &str, extra: &[char]| -> Result<String, ApiError> {
        let w = w.trim();
        let ok = |c: char| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c)
        };
        if w.chars().all(ok) {
            Ok(w.to_string())
        } else {
            Err(bad("invalid label key or value"))
        }
    };
    let key = |k: &str| match word(k, &['/']) {
        Ok(k) if k.is_empty() => Err(bad("empty label key")),
        other => other,
    };
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    split_top_level(s)
        .into_iter()
        .map(|term| {
            let t = term.trim();
            if let Some(rest) = t.strip_prefix('!') {
                Ok(LabelReq::NotExists(key(rest)?))
            } else if let Some((head, values)) = t.split_once(" in ") {
                let values = values
                    .trim()
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| bad("a set needs parentheses"))?;
                let values = values
                    .split(',')
                    .map(|v| word(v, &[]))
                    .collect::<Result<_, _>>()?;
                Ok(LabelReq::In(key(head)?, values))
            } else if let Some((k, v)) = t.split_once('=') {
                Ok(LabelReq::Eq(key(k)?, word(v, &[])?))
            } else {
                Ok(LabelReq::Exists(key(t)?))
            }
        })
        .collect()
}

/// What a list or watch selects: namespace, object name (a watch of one object), labels.
#[derive(Clone, Debug, Default)]
pub(super) struct Filter {
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    /// `fieldSelector=metadata.name=NAME`, what `kube::runtime::wait::await_condition` sends.
    pub(super) field_name: Option<String>,
    pub(super) labels: Vec<LabelReq>,
}

impl Filter {
    /// Of field selectors only `metadata.name=NAME` is implemented (the one the product sends,
    /// through `await_condition`); any other answers 400.
    pub(super) fn from_query(
        namespace: Option<&str>,
        name: Option<&str>,
        q: &Query,
    ) -> Result<Self, ApiError> {
        let field_name = match q.get("fieldSelector").unwrap_or("") {
            "" => None,
            s => match s.strip_prefix("metadata.name=") {
                Some(n) if !n.contains(',') => Some(n.to_owned()),
                _ => {
                    return Err(ApiError::bad_request(&format!(
                        "fieldSelector {s:?} is not implemented by the fake API server (only metadata.name=NAME)"
                    )));
                }
            },
        };
        Ok(Filter {
            namespace: namespace.map(String::from),
            name: name.map(String::from),
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
            && is(&self.name, "name")
            && is(&self.field_name, "name")
            && self.labels.iter().all(|r| r.matches(&labels))
    }
}

/// Decoded query parameters (last value wins).
pub(super) struct Query(pub(super) HashMap<String, String>);

impl Query {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(super) fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(parse_bool).unwrap_or(false)
    }

    pub(super) fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}
