//! Create, update (PUT and PATCH, the `scale` view) and delete, with the preconditions and
//! strategies of the real registry; the direct helpers for tests and hooks.

use super::*;

impl Store {
    /// The stored object at an object path, and its key.
    pub(super) fn stored(&self, t: &Target) -> Result<(String, &Value), ApiError> {
        let def = &self.defs[t.res];
        let name = t.name.as_deref().expect("object path");
        let key = Self::key(def, t.namespace.as_deref(), name);
        let obj = self.objects[t.res]
            .get(&key)
            .ok_or_else(|| ApiError::not_found(def, name))?;
        Ok((key, obj))
    }

    /// [`Self::stored`], owned (for a write), with its resource and name.
    pub(super) fn existing(
        &self,
        t: &Target,
    ) -> Result<(Arc<ResourceDef>, String, String, Value), ApiError> {
        let (key, obj) = self.stored(t)?;
        let name = t.name.clone().expect("object path");
        Ok((self.defs[t.res].clone(), name, key, obj.clone()))
    }

    pub(super) fn create_at(
        &mut self,
        t: &Target,
        body: Value,
        mode: Mode,
    ) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        if def.namespaced && t.namespace.is_none() {
            return Err(ApiError::bad_request("namespace is required"));
        }
        let mut obj = strip_type_meta(body);
        set_meta(
            &mut obj,
            "namespace",
            t.namespace
                .clone()
                .filter(|_| def.namespaced)
                .map(Value::from),
        );
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
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            set_meta(&mut obj, field, None);
        }
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        if name.is_empty() {
            return Err(ApiError::not_implemented(
                "a create without metadata.name (generateName)",
            ));
        }
        match mode {
            Mode::Http => {
                let uid = self.new_uid();
                set_meta(&mut obj, "uid", Some(uid.into()));
                set_meta(&mut obj, "creationTimestamp", Some(now_rfc3339().into()));
                match &def.initial_status {
                    Some(Value::Null) => {
                        obj.as_object_mut().expect("object").remove("status");
                    }
                    Some(status) => obj["status"] = status.clone(),
                    None => {}
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
        if def.scale_subresource && obj.pointer("/spec/replicas").is_none() {
            obj["spec"]["replicas"] = 1.into();
        }
        let key = Self::key(&def, t.namespace.as_deref(), &name);
        if let Some(existing) = self.objects[t.res].get(&key) {
            return Err(ApiError::already_exists(
                &def,
                &name,
                meta_value(existing, "deletionTimestamp").is_some(),
            ));
        }
        let stored = self.commit(t.res, key, EventType::Added, obj, None);
        Ok(render(&def, &stored))
    }

    /// The update pipeline of PUT, PATCH and the direct helpers. `make` turns the current view
    /// (object, or Scale) into the requested one.
    pub(super) fn update_at(
        &mut self,
        t: &Target,
        mode: Mode,
        make: &mut dyn FnMut(Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let (def, name, key, existing) = self.existing(t)?;
        let view = view_for(t);
        let requested = make(view_of(&def, view, &existing))?;
        // A uid in the body is a storage precondition (a real PATCH answers 422 instead).
        let (wanted, actual) = (meta_str(&requested, "uid"), meta_str(&existing, "uid"));
        if let Some(wanted) = wanted.filter(|w| !w.is_empty() && Some(*w) != actual) {
            let actual = actual.unwrap_or("");
            return Err(ApiError::uid_storage_precondition(
                &def, &key, &name, wanted, actual,
            ));
        }
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
            View::Scale => {
                let mut obj = existing.clone();
                obj["spec"]["replicas"] = requested
                    .pointer("/spec/replicas")
                    .cloned()
                    .unwrap_or(json!(0));
                obj
            }
        };
        let existing_rv = object_rv(&existing);
        if !new_rv.is_empty() && new_rv.parse::<u64>() != Ok(existing_rv) {
            return Err(ApiError::stale(&def, &name));
        }
        before_update(&def, &existing, &mut obj);
        if obj == existing {
            return Ok(view_of(&def, view, &existing));
        }
        if should_delete_during_update(&existing, &obj) {
            self.commit(
                t.res,
                key,
                EventType::Deleted,
                existing.clone(),
                Some(existing),
            );
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
        let (def, name, key, existing) = self.existing(t)?;
        let uid = meta_str(&existing, "uid").unwrap_or("").to_string();
        if let Some(wanted) = opts.uid.as_deref().filter(|w| *w != uid) {
            return Err(ApiError::delete_precondition(&def, &name, wanted, &uid));
        }
        if !finalizers(&existing).is_empty() {
            let mut obj = existing.clone();
            if meta_value(&obj, "deletionTimestamp").is_none() {
                set_meta(&mut obj, "deletionTimestamp", Some(now_rfc3339().into()));
            }
            set_meta(&mut obj, "deletionGracePeriodSeconds", Some(0.into()));
            if obj == existing {
                return Ok(Deletion::Pending(render(&def, &obj)));
            }
            let stored = self.commit(t.res, key, EventType::Modified, obj, Some(existing));
            return Ok(Deletion::Pending(render(&def, &stored)));
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
    /// `scale` view.
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
        self.create_at(&t, obj, Mode::Direct)
    }

    /// Applies a JSON merge patch (RFC 7386) to an object, status included.
    pub fn patch(&mut self, object_path: &str, merge_patch: Value) -> Result<Value, ApiError> {
        let t = self.target(object_path);
        self.update_at(&t, Mode::Direct, &mut |mut current| {
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
        Some("scale") => View::Scale,
        _ => View::Main,
    }
}

pub(super) fn view_of(def: &ResourceDef, view: View, obj: &Value) -> Value {
    match view {
        View::Main => render(def, obj),
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

/// The metadata that names an object and its version: kept over an update, shown in a `Scale`.
const IDENTITY: [&str; 5] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
];

/// `rest.BeforeUpdate` and the strategies' `PrepareForUpdate`: what the server keeps of the
/// stored object, the resourceVersion it is written at and the generation.
pub(super) fn before_update(def: &ResourceDef, existing: &Value, obj: &mut Value) {
    let deletion = ["deletionTimestamp", "deletionGracePeriodSeconds"];
    for field in IDENTITY.into_iter().chain(deletion) {
        set_meta(obj, field, meta_value(existing, field));
    }
    let mut generation = meta_value(existing, "generation");
    if def.generation && obj.get("spec") != existing.get("spec") {
        generation = Some((generation.and_then(|g| g.as_i64()).unwrap_or(0) + 1).into());
    }
    set_meta(obj, "generation", generation);
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
    for field in IDENTITY {
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

/// `metav1.LabelSelectorAsSelector(sel).String()` of the `matchLabels` (the tests' workloads
/// have no `matchExpressions`).
pub(super) fn selector_string(sel: &Value) -> String {
    let labels = sel.get("matchLabels").and_then(Value::as_object);
    let reqs: BTreeMap<&str, String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), format!("{k}={}", v.as_str().unwrap_or(""))))
        .collect();
    reqs.into_values().collect::<Vec<_>>().join(",")
}
