//! Create, update (PUT and PATCH, the `status` and `scale` views) and delete, with the
//! preconditions and strategies of the real registry; the direct helpers for tests and hooks.

use super::*;

impl Store {
    pub(super) fn create_at(
        &mut self,
        t: &Target,
        body: Value,
        mode: Mode,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        check_type_meta(&def, &body)?;
        let mut obj = strip_type_meta(body);
        ensure_namespace(&def, t.namespace.as_deref(), &mut obj)?;
        if def.namespaced && meta_str(&obj, "namespace").unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "the server could not find the requested resource: namespace is required",
            ));
        }
        // etcd3 storage refuses a (parsable, non-zero) resourceVersion; the error is not a
        // StatusError, so the client gets a bare 500.
        if mode == Mode::Http && object_rv(&obj) != 0 {
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
                None,
            ));
        }
        set_meta(&mut obj, "resourceVersion", None);
        set_meta(&mut obj, "deletionTimestamp", None);
        set_meta(&mut obj, "deletionGracePeriodSeconds", None);
        set_meta(&mut obj, "selfLink", None);
        let given_name = meta_str(&obj, "name").unwrap_or("").to_string();
        let generate_name = meta_str(&obj, "generateName").unwrap_or("").to_string();
        if given_name.is_empty() && generate_name.is_empty() {
            return Err(ApiError::invalid(
                &def,
                "",
                &[FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        match mode {
            Mode::Http => {
                let uid = self.new_uid();
                set_meta(&mut obj, "uid", Some(uid.into()));
                set_meta(&mut obj, "creationTimestamp", Some(now_rfc3339().into()));
                if def.initial_status == Some(Value::Null) {
                    obj.as_object_mut().expect("object").remove("status");
                } else if let Some(status) = &def.initial_status {
                    let mut status = status.clone();
                    if def.group.is_empty() && def.plural == "persistentvolumes" {
                        status["lastPhaseTransitionTime"] = now_rfc3339().into();
                    }
                    obj["status"] = status;
                }
                if def.generation {
                    set_meta(&mut obj, "generation", Some(1.into()));
                }
            }
            Mode::Direct => {
                if meta_str(&obj, "uid").unwrap_or("").is_empty() {
                    let uid = self.new_uid();
                    set_meta(&mut obj, "uid", Some(uid.into()));
                }
                if meta_str(&obj, "creationTimestamp").unwrap_or("").is_empty() {
                    set_meta(&mut obj, "creationTimestamp", Some(now_rfc3339().into()));
                }
                if def.generation && meta_value(&obj, "generation").is_none() {
                    set_meta(&mut obj, "generation", Some(1.into()));
                }
            }
        }
        if def.scale_subresource {
            let spec = obj
                .as_object_mut()
                .expect("object")
                .entry("spec")
                .or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.entry("replicas").or_insert(1.into());
            }
        }
        let ns = meta_str(&obj, "namespace").map(String::from);
        let mut name = given_name.clone();
        if name.is_empty() {
            // Like the API server, retry a few times when a generated name is taken.
            for _ in 0..8 {
                name = format!("{generate_name}{}", self.generated_name_suffix());
                if !self.objects[t.res].contains_key(&Self::key(&def, ns.as_deref(), &name)) {
                    break;
                }
            }
        }
        set_meta(&mut obj, "name", Some(name.clone().into()));
        let key = Self::key(&def, ns.as_deref(), &name);
        if let Some(existing) = self.objects[t.res].get(&key) {
            return Err(ApiError::already_exists(
                &def,
                &name,
                meta_value(existing, "deletionTimestamp").is_some(),
            ));
        }
        if dry_run {
            return Ok(render(&def, &obj));
        }
        let stored = self.commit(t.res, key, EventType::Added, obj, None);
        Ok(render(&def, &stored))
    }

    /// The update pipeline of PUT, PATCH and the direct helpers. `make` turns the current view
    /// (object, or Scale) into the requested one; `uid_precondition` makes a uid in it a storage
    /// precondition (PUT).
    pub(super) fn update_at(
        &mut self,
        t: &Target,
        mode: Mode,
        dry_run: bool,
        uid_precondition: bool,
        make: &mut dyn FnMut(Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        let view = view_for(t);
        let name = t.name.clone().expect("object path");
        let key = Self::key(&def, t.namespace.as_deref(), &name);
        let existing = self.objects[t.res]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def, &name))?;
        let requested = make(view_of(&def, view, &existing))?;
        if !requested.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        if uid_precondition {
            let wanted = meta_str(&requested, "uid").unwrap_or("");
            let actual = meta_str(&existing, "uid").unwrap_or("");
            if !wanted.is_empty() && wanted != actual {
                return Err(ApiError::uid_storage_precondition(
                    &def, &key, &name, wanted, actual,
                ));
            }
        }
        match view {
            View::Scale => {
                if let Some(kind) = requested.get("kind").and_then(Value::as_str)
                    && kind != "Scale"
                {
                    return Err(ApiError::bad_request(&format!(
                        "expected input object type to be Scale, but {kind}"
                    )));
                }
            }
            _ => check_type_meta(&def, &requested)?,
        }
        let requested_name = meta_str(&requested, "name").unwrap_or("");
        if requested_name != name {
            return Err(ApiError::bad_request(&format!(
                "the name of the object ({requested_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut requested = requested;
        ensure_namespace(&def, t.namespace.as_deref(), &mut requested)?;
        let new_rv = meta_str(&requested, "resourceVersion")
            .unwrap_or("")
            .to_string();

        let mut obj = match view {
            View::Main => {
                let mut obj = strip_type_meta(requested);
                if def.status_subresource && mode == Mode::Http {
                    copy_field(&existing, &mut obj, "status");
                }
                obj
            }
            View::Status => {
                let mut obj = existing.clone();
                copy_field(&requested, &mut obj, "status");
                if let Some(uid) = meta_value(&requested, "uid") {
                    set_meta(&mut obj, "uid", Some(uid));
                }
                obj
            }
            View::Scale => {
                let replicas = requested
                    .pointer("/spec/replicas")
                    .cloned()
                    .unwrap_or(json!(0));
                if replicas.as_i64().is_none_or(|r| r < 0) {
                    return Err(ApiError::invalid_kind(
                        "Scale.autoscaling",
                        "autoscaling",
                        "Scale",
                        &name,
                        &[FieldError::invalid(
                            "spec.replicas",
                            &replicas,
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
                let mut obj = existing.clone();
                let spec = obj
                    .as_object_mut()
                    .expect("object")
                    .entry("spec")
                    .or_insert_with(|| json!({}));
                spec["replicas"] = replicas;
                if let Some(uid) = meta_value(&requested, "uid") {
                    set_meta(&mut obj, "uid", Some(uid));
                }
                obj
            }
        };

        let existing_rv = object_rv(&existing);
        if !new_rv.is_empty() {
            let parsed: u64 = new_rv.parse().map_err(|_| {
                ApiError::bad_request(&format!("invalid resourceVersion: {new_rv}"))
            })?;
            if parsed != existing_rv {
                return Err(ApiError::stale(&def, &name));
            }
        }
        before_update(&def, view, &existing, &mut obj, &name)?;
        set_meta(
            &mut obj,
            "resourceVersion",
            Some(existing_rv.to_string().into()),
        );
        if obj == existing {
            return Ok(view_of(&def, view, &existing));
        }
        if should_delete_during_update(&existing, &obj) {
            if !dry_run {
                self.commit(
                    t.res,
                    key,
                    EventType::Deleted,
                    existing.clone(),
                    Some(existing),
                );
            }
            return Ok(view_of(&def, view, &obj));
        }
        if dry_run {
            return Ok(view_of(&def, view, &obj));
        }
        let stored = self.commit(t.res, key, EventType::Modified, obj, Some(existing));
        Ok(view_of(&def, view, &stored))
    }

    pub(super) fn delete_at(
        &mut self,
        t: &Target,
        opts: &DeleteOpts,
    ) -> Result<Deletion, ApiError> {
        let def = self.defs[t.res].clone();
        let name = t.name.clone().expect("object path");
        let key = Self::key(&def, t.namespace.as_deref(), &name);
        let existing = self.objects[t.res]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def, &name))?;
        let uid = meta_str(&existing, "uid").unwrap_or("").to_string();
        for (what, field, wanted, why) in [
            ("UID", "uid", &opts.uid, "deleted and then recreated"),
            (
                "ResourceVersion",
                "resourceVersion",
                &opts.resource_version,
                "modified",
            ),
        ] {
            let actual = meta_str(&existing, field).unwrap_or("");
            if let Some(wanted) = wanted
                && wanted != actual
            {
                return Err(ApiError::delete_precondition(
                    &def,
                    &name,
                    &format!(
                        "the {what} in the precondition ({wanted}) does not match the {what} in record \
                         ({actual}). The object might have been {why}"
                    ),
                ));
            }
        }
        if !finalizers(&existing).is_empty() {
            let mut obj = existing.clone();
            if meta_value(&obj, "deletionTimestamp").is_none() {
                if let Some(generation) = meta_value(&obj, "generation")
                    .and_then(|g| g.as_i64())
                    .filter(|g| *g > 0)
                {
                    set_meta(&mut obj, "generation", Some((generation + 1).into()));
                }
                set_meta(&mut obj, "deletionTimestamp", Some(now_rfc3339().into()));
            }
            set_meta(&mut obj, "deletionGracePeriodSeconds", Some(0.into()));
            if obj == existing || opts.dry_run {
                return Ok(Deletion::Pending(render(&def, &obj)));
            }
            let stored = self.commit(t.res, key, EventType::Modified, obj, Some(existing));
            return Ok(Deletion::Pending(render(&def, &stored)));
        }
        if opts.dry_run {
            return Ok(Deletion::Deleted(render(&def, &existing)));
        }
        if opts.orphan {
            self.orphan_dependents(t.namespace.as_deref(), &uid);
        }
        let gone = self.commit(
            t.res,
            key,
            EventType::Deleted,
            existing.clone(),
            Some(existing),
        );
        Ok(Deletion::Deleted(render(&def, &gone)))
    }

    // ---- direct helpers (no HTTP; used by tests and hooks) ----

    pub(super) fn target(&self, path: &str) -> Target {
        self.parse_path(path)
            .unwrap_or_else(|e| panic!("bad fake API path {path:?}: {e}"))
    }

    /// The object at an object path (`/api/v1/namespaces/ns/persistentvolumeclaims/x`), or its
    /// `status`/`scale` view.
    pub fn get(&self, object_path: &str) -> Option<Value> {
        self.get_view(&self.target(object_path)).ok()
    }

    /// All objects of a collection path, in key order.
    pub fn list(&self, collection_path: &str) -> Vec<Value> {
        let t = self.target(collection_path);
        let def = &self.defs[t.res];
        let filter = Filter {
            namespace: t.namespace.clone().filter(|_| def.namespaced),
            ..Filter::default()
        };
        self.objects[t.res]
            .values()
            .filter(|o| filter.matches(o))
            .map(|o| render(def, o))
            .collect()
    }

    /// Creates an object in a collection; keeps `status`, `uid` and `creationTimestamp` as given.
    pub fn create(&mut self, collection_path: &str, obj: Value) -> Result<Value, ApiError> {
        let t = self.target(collection_path);
        assert!(
            t.name.is_none(),
            "create needs a collection path, got {collection_path:?}"
        );
        let mut t = t;
        if t.namespace.is_none() && self.defs[t.res].namespaced {
            t.namespace = meta_str(&obj, "namespace").map(String::from);
        }
        self.create_at(&t, obj, Mode::Direct, false)
    }

    /// Applies a JSON merge patch (RFC 7386) to an object, status included.
    pub fn patch(&mut self, object_path: &str, merge_patch: Value) -> Result<Value, ApiError> {
        let t = self.target(object_path);
        self.update_at(&t, Mode::Direct, false, false, &mut |mut current| {
            json_patch::merge(&mut current, &merge_patch);
            Ok(current)
        })
    }

    /// Deletes an object (finalizers honoured).
    pub fn delete(&mut self, object_path: &str) -> Result<Deletion, ApiError> {
        let t = self.target(object_path);
        self.delete_at(&t, &DeleteOpts::default())
    }
}

pub(super) fn view_for(t: &Target) -> View {
    match t.sub.as_deref() {
        Some("status") => View::Status,
        Some("scale") => View::Scale,
        _ => View::Main,
    }
}

pub(super) fn view_of(def: &ResourceDef, view: View, obj: &Value) -> Value {
    match view {
        View::Main | View::Status => render(def, obj),
        View::Scale => scale_of(obj),
    }
}

pub(super) fn copy_field(from: &Value, to: &mut Value, field: &str) {
    let to = to.as_object_mut().expect("object");
    match from.get(field) {
        Some(v) => {
            to.insert(field.into(), v.clone());
        }
        None => {
            to.remove(field);
        }
    }
}

pub(super) fn check_type_meta(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != def.kind
    {
        return Err(ApiError::bad_request(&format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            def.kind
        )));
    }
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str)
        && api_version != def.api_version()
    {
        return Err(ApiError::bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            def.api_version()
        )));
    }
    Ok(())
}

/// `rest.EnsureObjectNamespaceMatchesRequestNamespace`.
pub(super) fn ensure_namespace(
    def: &ResourceDef,
    url_ns: Option<&str>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let expected = url_ns.filter(|_| def.namespaced).unwrap_or("");
    let actual = meta_str(obj, "namespace").unwrap_or("").to_string();
    if actual == expected {
        return Ok(());
    }
    if actual.is_empty() || expected.is_empty() {
        set_meta(
            obj,
            "namespace",
            (!expected.is_empty()).then(|| expected.into()),
        );
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the namespace of the provided object does not match the namespace sent on the request",
    ))
}

/// `rest.BeforeUpdate` and the strategies' `PrepareForUpdate`.
pub(super) fn before_update(
    def: &ResourceDef,
    view: View,
    existing: &Value,
    obj: &mut Value,
    name: &str,
) -> Result<(), ApiError> {
    let old_uid = meta_str(existing, "uid").unwrap_or("").to_string();
    match meta_str(obj, "uid").unwrap_or("") {
        "" => set_meta(obj, "uid", Some(old_uid.into())),
        uid if uid != old_uid => {
            let value = Value::from(uid);
            return Err(ApiError::invalid(
                def,
                name,
                &[FieldError::invalid(
                    "metadata.uid",
                    &value,
                    "field is immutable",
                )],
            ));
        }
        _ => {}
    }
    for field in ["creationTimestamp", "deletionTimestamp"] {
        set_meta(obj, field, meta_value(existing, field));
    }
    set_meta(
        obj,
        "deletionGracePeriodSeconds",
        meta_value(existing, "deletionGracePeriodSeconds"),
    );
    let mut generation = meta_value(existing, "generation");
    if def.generation && view != View::Status && obj.get("spec") != existing.get("spec") {
        generation = Some((generation.and_then(|g| g.as_i64()).unwrap_or(0) + 1).into());
    }
    set_meta(obj, "generation", generation);
    if meta_value(existing, "deletionTimestamp").is_some() {
        let old = finalizers(existing);
        let added: Vec<String> = finalizers(obj)
            .into_iter()
            .filter(|f| !old.contains(f))
            .collect();
        if !added.is_empty() {
            let list = added
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::invalid(
                def,
                name,
                &[FieldError::forbidden(
                    "metadata.finalizers",
                    &format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"
                    ),
                )],
            ));
        }
    }
    Ok(())
}

/// `registry.ShouldDeleteDuringUpdate`.
pub(super) fn should_delete_during_update(existing: &Value, obj: &Value) -> bool {
    finalizers(obj).is_empty()
        && meta_value(existing, "deletionTimestamp").is_some()
        && meta_value(existing, "deletionGracePeriodSeconds")
            .and_then(|g| g.as_i64())
            .unwrap_or(0)
            == 0
}

/// The `autoscaling/v1` `Scale` of a workload.
pub(super) fn scale_of(obj: &Value) -> Value {
    let mut metadata = Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta_value(obj, field) {
            metadata.insert(field.into(), v);
        }
    }
    let mut spec = Map::new();
    if let Some(r) = obj
        .pointer("/spec/replicas")
        .filter(|r| r.as_i64() != Some(0))
    {
        spec.insert("replicas".into(), r.clone());
    }
    let mut status = Map::new();
    status.insert(
        "replicas".into(),
        obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
    );
    let selector = obj
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    if !selector.is_empty() {
        status.insert("selector".into(), selector.into());
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// `metav1.LabelSelectorAsSelector(sel).String()`.
pub(super) fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let rendered = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                _ => continue,
            };
            reqs.push((key, rendered));
        }
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}
