//! What a list or watch selects (namespace, label selector, object name) and the decoded
//! query.

use super::*;

#[derive(Clone, Debug)]
pub(super) enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

impl LabelReq {
    pub(super) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::NotEq(k, v) => labels.get(k) != Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
            LabelReq::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

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

pub(super) fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad =
        |why: &str| ApiError::bad_request(&format!("unable to parse requirement: {why}: {s:?}"));
    let key = |k: &str| -> Result<String, ApiError> {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(bad("invalid label key"))
        } else {
            Ok(k.to_string())
        }
    };
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut reqs = Vec::new();
    for term in split_top_level(s) {
        let t = term.trim();
        if t.is_empty() {
            return Err(bad("empty requirement"));
        }
        let req = if let Some(rest) = t.strip_prefix('!') {
            LabelReq::NotExists(key(rest)?)
        } else if let Some(open) = t.find('(') {
            let inner = t[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| bad("missing ')'"))?;
            let mut head = t[..open].split_whitespace();
            let (k, op) = (
                head.next().ok_or_else(|| bad("missing key"))?,
                head.next().unwrap_or(""),
            );
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            if values.iter().any(String::is_empty) {
                return Err(bad("empty value in set"));
            }
            match op {
                "in" => LabelReq::In(key(k)?, values),
                "notin" => LabelReq::NotIn(key(k)?, values),
                _ => return Err(bad("unknown set operator")),
            }
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelReq::NotEq(key(k)?, v.trim().into())
        } else if let Some((k, v)) = t.split_once("==") {
            LabelReq::Eq(key(k)?, v.trim().into())
        } else if let Some((k, v)) = t.split_once('=') {
            LabelReq::Eq(key(k)?, v.trim().into())
        } else if let Some((k, v)) = t.split_once('>') {
            LabelReq::Gt(
                key(k)?,
                v.trim().parse().map_err(|_| bad("not an integer"))?,
            )
        } else if let Some((k, v)) = t.split_once('<') {
            LabelReq::Lt(
                key(k)?,
                v.trim().parse().map_err(|_| bad("not an integer"))?,
            )
        } else {
            LabelReq::Exists(key(t)?)
        };
        reqs.push(req);
    }
    Ok(reqs)
}

#[derive(Clone, Debug)]
pub(super) struct FieldReq {
    /// `metadata.name` or `metadata.namespace`.
    pub(super) field: &'static str,
    pub(super) equal: bool,
    pub(super) value: String,
}

pub(super) fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, ApiError> {
    let mut reqs = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, true)
        } else {
            return Err(ApiError::bad_request(&format!(
                "invalid selector: '{s}'; can't understand '{term}'"
            )));
        };
        let field = match field.trim() {
            "metadata.name" => "name",
            "metadata.namespace" => "namespace",
            other => {
                return Err(ApiError::bad_request(&format!(
                    "field label not supported: {other}"
                )));
            }
        };
        reqs.push(FieldReq {
            field,
            equal,
            value: value.trim().to_string(),
        });
    }
    Ok(reqs)
}

/// What a list or watch selects: namespace, labels, fields.
#[derive(Clone, Debug, Default)]
pub(super) struct Filter {
    pub(super) namespace: Option<String>,
    pub(super) labels: Vec<LabelReq>,
    pub(super) fields: Vec<FieldReq>,
}

impl Filter {
    pub(super) fn from_query(
        namespace: Option<&str>,
        name: Option<&str>,
        q: &Query,
    ) -> Result<Self, ApiError> {
        let mut fields = parse_field_selector(q.get("fieldSelector").unwrap_or(""))?;
        if let Some(name) = name {
            fields.push(FieldReq {
                field: "name",
                equal: true,
                value: name.into(),
            });
        }
        Ok(Filter {
            namespace: namespace.map(String::from),
            labels: parse_label_selector(q.get("labelSelector").unwrap_or(""))?,
            fields,
        })
    }

    /// No label or field selector (the namespace of the URL does not count).
    pub(super) fn selects_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let ns = meta_str(obj, "namespace").unwrap_or("");
        if self.namespace.as_deref().is_some_and(|want| want != ns) {
            return false;
        }
        let name = meta_str(obj, "name").unwrap_or("");
        let fields_ok = self.fields.iter().all(|f| {
            let actual = if f.field == "name" { name } else { ns };
            (actual == f.value) == f.equal
        });
        if !fields_ok {
            return false;
        }
        let labels = labels(obj);
        self.labels.iter().all(|r| r.matches(&labels))
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
