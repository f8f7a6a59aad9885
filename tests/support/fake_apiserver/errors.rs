//! API errors as the real server answers them: `Status` objects.

use super::*;

/// An API error: the HTTP code and the `Status` object the server answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub status: Value,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.status["message"])
    }
}

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

    /// A Status for an HTTP code, as `fail_next` and `forbid` inject it.
    pub fn for_code(code: u16, message: &str) -> Self {
        let reason = match code {
            403 => "Forbidden",
            500 => "InternalError",
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
                def.plural
            ),
        )
    }

    /// `rest.BeforeDelete`'s uid precondition conflict (qualified by kind, not resource).
    pub(super) fn delete_precondition(
        def: &ResourceDef,
        name: &str,
        wanted: &str,
        actual: &str,
    ) -> Self {
        let mut details = Self::resource_details(def, name);
        details["kind"] = def.kind.clone().into();
        Self::new(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the UID in the precondition ({wanted}) \
                 does not match the UID in record ({actual}). The object might have been deleted and then recreated",
                resources::qualify(&def.kind, &def.group)
            ),
            Some(details),
        )
    }

    pub(super) fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    /// A request the fake does not implement (the product sends none of them).
    pub(super) fn not_implemented(what: &str) -> Self {
        Self::bad_request(&format!("{what} is not implemented by the fake API server"))
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
}
