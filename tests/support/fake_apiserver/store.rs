//! The storage: objects per resource, the global resourceVersion, the history of writes (for
//! watches from a resourceVersion and compaction), open watches and the commit that feeds them
//! and the write hooks.

use super::*;

/// Watch event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed write, as hooks see it.
#[derive(Clone, Debug)]
pub struct WriteEvent {
    pub event_type: EventType,
    /// The resourceVersion of the write.
    pub resource_version: u64,
    /// Plural resource name, e.g. `persistentvolumeclaims`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The object after the write (with kind/apiVersion); for `Deleted` its last state.
    pub object: Value,
    /// The object before the write (`None` for `Added`).
    pub old_object: Option<Value>,
}

/// Outcome of a delete.
#[derive(Clone, Debug, PartialEq)]
pub enum Deletion {
    /// Finalizers keep the object; it now carries `deletionTimestamp`.
    Pending(Value),
    /// The object is gone; its last state (with the deletion's resourceVersion).
    Deleted(Value),
}

#[derive(Clone, Debug)]
pub(super) struct HistoryEntry {
    pub(super) rv: u64,
    pub(super) res: usize,
    pub(super) event_type: EventType,
    /// State after the write; for DELETED the last state with the deletion's resourceVersion.
    pub(super) object: Value,
}

pub(super) enum WatchMsg {
    Line(Bytes),
    Break,
}

pub(super) struct WatchSub {
    pub(super) id: u64,
    pub(super) res: usize,
    pub(super) filter: Filter,
    pub(super) bookmarks: bool,
    pub(super) tx: mpsc::UnboundedSender<WatchMsg>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Through HTTP: full API semantics.
    Http,
    /// Direct test helper: keeps status/uid/creationTimestamp as given.
    Direct,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum View {
    Main,
    Scale,
}

/// A parsed API path.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) res: usize,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

/// Delete options (from the body and the query).
#[derive(Clone, Debug, Default)]
pub(super) struct DeleteOpts {
    /// `preconditions.uid`.
    pub(super) uid: Option<String>,
    /// `propagationPolicy: Orphan`.
    pub(super) orphan: bool,
}

/// The fake's storage: objects, history, open watches. Hooks get `&mut Store`.
pub struct Store {
    pub(super) defs: Vec<Arc<ResourceDef>>,
    pub(super) rv: u64,
    /// Resource versions below this are expired (410).
    pub(super) compacted: u64,
    /// Per resource (index into `defs`): etcd-like key (`ns/name` or `name`) -> stored object
    /// (without kind/apiVersion).
    pub(super) objects: Vec<BTreeMap<String, Value>>,
    pub(super) history: Vec<HistoryEntry>,
    pub(super) watchers: Vec<WatchSub>,
    pub(super) pending: VecDeque<WriteEvent>,
    pub(super) rng: u64,
    pub(super) next_watch_id: u64,
    pub(super) watch_count_tx: watch::Sender<usize>,
}

impl Store {
    pub(super) fn new(watch_count_tx: watch::Sender<usize>) -> Self {
        let defs: Vec<Arc<ResourceDef>> =
            ResourceDef::builtin().into_iter().map(Arc::new).collect();
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Store {
            objects: vec![BTreeMap::new(); defs.len()],
            defs,
            rv: 1,
            compacted: 0,
            history: Vec::new(),
            watchers: Vec::new(),
            pending: VecDeque::new(),
            rng: hasher.finish() | 1,
            next_watch_id: 1,
            watch_count_tx,
        }
    }

    pub(super) fn add_resource(&mut self, def: ResourceDef) {
        if let Some(i) = self.defs.iter().position(|d| {
            d.group == def.group && d.version == def.version && d.plural == def.plural
        }) {
            self.defs[i] = Arc::new(def);
        } else {
            self.defs.push(Arc::new(def));
            self.objects.push(BTreeMap::new());
        }
    }

    pub(super) fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn new_uid(&mut self) -> String {
        let (a, b) = (self.next_rand(), self.next_rand());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 | (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    // ---- paths ----

    pub(super) fn find_def(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.defs
            .iter()
            .position(|d| d.group == group && d.version == version && d.plural == plural)
    }

    pub(super) fn parse_path(&self, path: &str) -> Result<Target, ApiError> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(ApiError::unknown_resource()),
        };
        let namespaced = match rest {
            ["namespaces", ns, plural, tail @ ..] => self
                .find_def(group, version, plural)
                .filter(|&i| self.defs[i].namespaced)
                .map(|i| (i, Some(ns.to_string()), tail)),
            _ => None,
        };
        let (res, namespace, tail) = match namespaced {
            Some(found) => found,
            None => match rest {
                [plural, tail @ ..] => {
                    let i = self
                        .find_def(group, version, plural)
                        .ok_or_else(ApiError::unknown_resource)?;
                    if self.defs[i].namespaced && !tail.is_empty() {
                        return Err(ApiError::unknown_resource());
                    }
                    (i, None, tail)
                }
                [] => return Err(ApiError::unknown_resource()),
            },
        };
        let (name, sub) = match tail {
            [] => (None, None),
            [name] => (Some(name.to_string()), None),
            [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
            _ => return Err(ApiError::unknown_resource()),
        };
        let def = &self.defs[res];
        match sub.as_deref() {
            None => {}
            Some("scale") if def.scale_subresource => {}
            Some(_) => return Err(ApiError::unknown_resource()),
        }
        Ok(Target {
            res,
            namespace,
            name,
            sub,
        })
    }

    pub(super) fn key(def: &ResourceDef, ns: Option<&str>, name: &str) -> String {
        match ns.filter(|_| def.namespaced) {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        }
    }

    pub(super) fn key_of(def: &ResourceDef, obj: &Value) -> String {
        Self::key(
            def,
            meta_str(obj, "namespace"),
            meta_str(obj, "name").unwrap_or(""),
        )
    }

    /// What the garbage collector does for `propagationPolicy: Orphan`: the owner reference to
    /// `uid` is removed from every object of the namespace (before the owner goes).
    pub(super) fn orphan_dependents(&mut self, namespace: Option<&str>, uid: &str) {
        for res in 0..self.objects.len() {
            let owned: Vec<(String, Value)> = self.objects[res]
                .iter()
                .filter(|(_, o)| namespace.is_none() || meta_str(o, "namespace") == namespace)
                .filter(|(_, o)| {
                    meta_value(o, "ownerReferences").is_some_and(|refs| {
                        refs.as_array()
                            .is_some_and(|r| r.iter().any(|r| r["uid"] == uid))
                    })
                })
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            for (key, old) in owned {
                let mut obj = old.clone();
                let refs: Vec<Value> = meta_value(&obj, "ownerReferences")
                    .and_then(|refs| refs.as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| r["uid"] != uid)
                    .collect();
                let refs = (!refs.is_empty()).then(|| Value::from(refs));
                set_meta(&mut obj, "ownerReferences", refs);
                self.commit(res, key, EventType::Modified, obj, Some(old));
            }
        }
    }

    // ---- commits and watch fan-out ----

    pub(super) fn commit(
        &mut self,
        res: usize,
        key: String,
        event_type: EventType,
        mut obj: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        set_meta(&mut obj, "resourceVersion", Some(rv.to_string().into()));
        match event_type {
            EventType::Deleted => {
                self.objects[res].remove(&key);
            }
            _ => {
                self.objects[res].insert(key.clone(), obj.clone());
            }
        }
        let entry = HistoryEntry {
            rv,
            res,
            event_type,
            object: obj.clone(),
        };
        self.dispatch(&entry);
        let def = self.defs[res].clone();
        self.pending.push_back(WriteEvent {
            event_type,
            resource_version: rv,
            resource: def.plural.clone(),
            namespace: meta_str(&obj, "namespace")
                .filter(|_| def.namespaced)
                .map(String::from),
            name: meta_str(&obj, "name").unwrap_or("").to_string(),
            object: render(&def, &obj),
            old_object: prev.as_ref().map(|p| render(&def, p)),
        });
        self.history.push(entry);
        obj
    }

    /// The watch event line a watch with `filter` gets for `entry`, if any.
    pub(super) fn event_line(
        def: &ResourceDef,
        filter: &Filter,
        entry: &HistoryEntry,
    ) -> Option<Bytes> {
        filter
            .matches(&entry.object)
            .then(|| Self::line(entry.event_type.as_str(), render(def, &entry.object)))
    }

    pub(super) fn line(event_type: &str, object: Value) -> Bytes {
        let mut s = serde_json::to_string(&json!({"type": event_type, "object": object}))
            .expect("serializable");
        s.push('\n');
        Bytes::from(s)
    }

    pub(super) fn bookmark_line(def: &ResourceDef, rv: u64) -> Bytes {
        let mut object = json!({"kind": def.kind, "apiVersion": def.api_version(),
            "metadata": {"resourceVersion": rv.to_string()}});
        for field in &def.bookmark_fields {
            object[field.as_str()] = json!({});
        }
        Self::line("BOOKMARK", object)
    }

    pub(super) fn dispatch(&mut self, entry: &HistoryEntry) {
        let def = self.defs[entry.res].clone();
        let before = self.watchers.len();
        self.watchers.retain(|w| {
            if w.res != entry.res {
                return !w.tx.is_closed();
            }
            match Self::event_line(&def, &w.filter, entry) {
                Some(line) => w.tx.send(WatchMsg::Line(line)).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        if self.watchers.len() != before {
            self.publish_watch_count();
        }
    }

    pub(super) fn publish_watch_count(&self) {
        self.watch_count_tx.send_replace(self.watchers.len());
    }

    pub(super) fn remove_watch(&mut self, id: u64) {
        let before = self.watchers.len();
        self.watchers.retain(|w| w.id != id);
        if self.watchers.len() != before {
            self.publish_watch_count();
        }
    }

    /// Sends a bookmark to every watch that asked for them; returns how many got one.
    pub(super) fn bookmark_all(&mut self) -> usize {
        let rv = self.rv;
        let defs = self.defs.clone();
        let mut sent = 0;
        self.watchers.retain(|w| {
            if !w.bookmarks {
                return true;
            }
            let line = Self::bookmark_line(&defs[w.res], rv);
            let open = w.tx.send(WatchMsg::Line(line)).is_ok();
            sent += usize::from(open);
            open
        });
        self.publish_watch_count();
        sent
    }

    /// Breaks every open watch; returns how many there were.
    pub(super) fn break_all(&mut self) -> usize {
        let broken = self.watchers.len();
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Break);
        }
        self.publish_watch_count();
        broken
    }

    pub(super) fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }
}
