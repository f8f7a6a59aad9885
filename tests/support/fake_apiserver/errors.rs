//! API errors as the real server answers them: `Status` objects and `field.Error`s.

use super::*;

/// An API error: the HTTP code and the `Status` object the server answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub status: Value,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason(), self.message())
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: &str, details: Option<Value>) -> Self {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if reason.is_empty() {
            status.as_object_mut().expect("object").remove("reason");
        }
        if let Some(details) = details {
            status["details"] = details;
        }
        ApiError { code, status }
    }

    pub fn reason(&self) -> &str {
        self.status["reason"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.status["message"].as_str().unwrap_or("")
    }

    /// A Status for an HTTP code, as `fail_next` injects it.
    pub fn for_code(code: u16, message: &str) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        Self::new(code, reason, message, None)
    }

    pub(super) fn resource_details(def: &ResourceDef, name: &str) -> Value {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), name.into());
        }
        if !def.group.is_empty() {
            d.insert("group".into(), def.group.clone().into());
        }
        d.insert("kind".into(), def.plural.clone().into());
        Value::Object(d)
    }

    pub(super) fn kind_details(def: &ResourceDef, name: &str) -> Value {
        let mut d = Self::resource_details(def, name);
        d["kind"] = def.kind.clone().into();
        d
    }

    pub(super) fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", def.qualified_resource()),
            Some(Self::resource_details(def, name)),
        )
    }

    pub(super) fn already_exists(def: &ResourceDef, name: &str, being_deleted: bool) -> Self {
        let mut message = format!("{} \"{name}\" already exists", def.qualified_resource());
        if being_deleted {
            message = format!("object is being deleted: {message}");
        }
        Self::new(
            409,
            "AlreadyExists",
            &message,
            Some(Self::resource_details(def, name)),
        )
    }

    /// `errors.NewConflict(qualifiedResource, name, err)`.
    pub(super) fn conflict(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                def.qualified_resource()
            ),
            Some(Self::resource_details(def, name)),
        )
    }

    /// The optimistic-lock conflict of an update with a stale resourceVersion.
    pub(super) fn stale(def: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// The storage precondition failure of an update whose body names another uid.
    pub(super) fn uid_storage_precondition(
        def: &ResourceDef,
        key: &str,
        name: &str,
        wanted: &str,
        actual: &str,
    ) -> Self {
        Self::conflict(
            def,
            name,
            &format!(
                "StorageError: invalid object, Code: 4, Key: /registry/{}/{key}, ResourceVersion: 0, \
                 AdditionalErrorMsg: Precondition failed: UID in precondition: {wanted}, UID in object meta: {actual}",
                def.storage_prefix
            ),
        )
    }

    /// `rest.BeforeDelete`'s precondition conflicts (qualified by kind, not resource).
    pub(super) fn delete_precondition(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                def.qualified_kind()
            ),
            Some(Self::kind_details(def, name)),
        )
    }

    /// `errors.NewInvalid(groupKind, name, fieldErrors)`.
    pub(super) fn invalid_kind(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        errors: &[FieldError],
    ) -> Self {
        let rendered: Vec<String> = errors.iter().map(FieldError::to_string).collect();
        let aggregate = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut details = Map::new();
        if !name.is_empty() {
            details.insert("name".into(), name.into());
        }
        if !group.is_empty() {
            details.insert("group".into(), group.into());
        }
        details.insert("kind".into(), kind.into());
        details.insert(
            "causes".into(),
            errors
                .iter()
                .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
                .collect(),
        );
        Self::new(
            422,
            "Invalid",
            &format!("{qualified_kind} \"{name}\" is invalid: {aggregate}"),
            Some(Value::Object(details)),
        )
    }

    pub(super) fn invalid(def: &ResourceDef, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_kind(&def.qualified_kind(), &def.group, &def.kind, name, errors)
    }

    pub(super) fn invalid_list_options(errors: &[FieldError]) -> Self {
        Self::invalid_kind(
            "ListOptions.meta.k8s.io",
            "meta.k8s.io",
            "ListOptions",
            "",
            errors,
        )
    }

    pub(super) fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    pub(super) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )
    }

    pub(super) fn unknown_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    pub(super) fn expired(message: &str) -> Self {
        Self::new(410, "Expired", message, None)
    }

    pub(super) fn too_large_resource_version(wanted: u64, current: u64) -> Self {
        Self::new(
            504,
            "Timeout",
            &format!("Too large resource version: {wanted}, current: {current}"),
            Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1
            })),
        )
    }
}

/// A `field.Error` of apimachinery.
#[derive(Clone, Debug)]
pub(super) struct FieldError {
    pub(super) field: String,
    pub(super) kind: FieldErrorKind,
    pub(super) detail: String,
}

#[derive(Clone, Debug)]
pub(super) enum FieldErrorKind {
    /// Carries the rendered bad value (`"x"` for strings, `-1` for numbers).
    Invalid(String),
    Forbidden,
    Required,
    /// Carries the rendered bad value.
    NotSupported(String),
}

impl FieldError {
    pub(super) fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value.to_string()),
            detail: detail.into(),
        }
    }

    pub(super) fn forbidden(field: &str, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    pub(super) fn required(field: &str, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub(super) fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::NotSupported(_) => "FieldValueNotSupported",
        }
    }

    /// `ErrorBody()`: the message without the field path.
    pub(super) fn body(&self) -> String {
        match &self.kind {
            FieldErrorKind::Invalid(v) => format!("Invalid value: {v}: {}", self.detail),
            FieldErrorKind::Forbidden => format!("Forbidden: {}", self.detail),
            FieldErrorKind::Required => format!("Required value: {}", self.detail),
            FieldErrorKind::NotSupported(v) => format!("Unsupported value: {v}: {}", self.detail),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}
