//! GET, LIST (pages with continue tokens, snapshots at a resourceVersion) and WATCH.

use super::*;

impl Store {
    pub(super) fn get_view(&self, t: &Target) -> Result<Value, ApiError> {
        let (_, obj) = self.stored(t)?;
        Ok(view_of(&self.defs[t.res], view_for(t), obj))
    }

    /// A list page. `resourceVersion` unset or `"0"` (what kube sends) serves the current state;
    /// a `continue` token from an older resourceVersion answers 410: the fake keeps no
    /// snapshots (a real server serves one, unless it was compacted).
    pub(super) fn list_at(&self, t: &Target, q: &Query) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        let filter = Filter::from_query(t.namespace.as_deref(), q)?;
        let limit = match q.get("limit") {
            None | Some("") => 0usize,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(&format!("invalid limit: {l}")))?
                .max(0) as usize,
        };
        if q.get("resourceVersionMatch").is_some()
            || !matches!(q.get("resourceVersion"), None | Some("" | "0"))
        {
            return Err(ApiError::not_implemented(
                "a list at a resourceVersion (resourceVersion other than 0, resourceVersionMatch)",
            ));
        }
        let start = match q.get("continue").unwrap_or("") {
            "" => String::new(),
            cont => {
                let (token_rv, start) = decode_continue(cont)?;
                if token_rv >= 0 && token_rv as u64 != self.rv {
                    let mut err = ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a \
                         new list without the continue parameter, or use the continue token in this response to retrieve \
                         the remainder of the results. Continuing with the provided token results in an inconsistent list \
                         - objects that were created, modified, or deleted between the time the first chunk was returned \
                         and now may show up in the list.",
                    );
                    err.status["metadata"] = json!({"continue": encode_continue(-1, &start)});
                    return Err(err);
                }
                // rv -1: the "inconsistent" token of a 410, served from the current state.
                start
            }
        };
        let prefix = t
            .namespace
            .as_ref()
            .filter(|_| def.namespaced)
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default();
        let mut items = Vec::new();
        let mut last_key: Option<&str> = None;
        let mut remaining = 0u64;
        for (key, obj) in self.objects[t.res].range(format!("{prefix}{start}")..) {
            let Some(rel) = key.strip_prefix(&prefix) else {
                break;
            };
            // The rest of a full page is only counted: without a selector, by key alone (a
            // page of a 100,000-object list then costs its items, not the whole list).
            if limit > 0 && items.len() >= limit && filter.selects_everything() {
                remaining += 1;
                continue;
            }
            if !filter.matches(obj) {
                continue;
            }
            if limit > 0 && items.len() >= limit {
                remaining += 1;
                continue;
            }
            items.push(render_item(&def, obj));
            last_key = Some(rel);
        }
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if remaining > 0 {
            let last = last_key.expect("a full page has a last key");
            metadata["continue"] = encode_continue(self.rv as i64, &format!("{last}\u{0}")).into();
            if filter.selects_everything() {
                metadata["remainingItemCount"] = remaining.into();
            }
        }
        Ok(json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    // ---- watch ----

    pub(super) fn start_watch(
        &mut self,
        t: &Target,
        q: &Query,
    ) -> Result<(u64, mpsc::UnboundedReceiver<WatchMsg>), ApiError> {
        let def = self.defs[t.res].clone();
        let filter = Filter::from_query(t.namespace.as_deref(), q)?;
        let bookmarks = q.flag("allowWatchBookmarks");
        // kube's watcher lists first and watches from the list's resourceVersion; a watch
        // without one (initial events, streaming lists) is not implemented.
        let wanted: u64 = q
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .filter(|rv| *rv > 0)
            .ok_or_else(|| ApiError::not_implemented("a watch without a resourceVersion"))?;
        if q.get("sendInitialEvents").is_some() || q.get("resourceVersionMatch").is_some() {
            return Err(ApiError::not_implemented("sendInitialEvents on a watch"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        if wanted < self.compacted {
            let err = ApiError::expired(&format!(
                "too old resource version: {wanted} ({})",
                self.compacted
            ));
            let _ = tx.send(WatchMsg::Line(Self::line("ERROR", err.status)));
            return Ok((id, rx));
        }
        for entry in self
            .history
            .iter()
            .filter(|e| e.res == t.res && e.rv > wanted)
        {
            if let Some(line) = Self::event_line(&def, &filter, entry) {
                let _ = tx.send(WatchMsg::Line(line));
            }
        }
        self.watchers.push(WatchSub {
            id,
            res: t.res,
            filter,
            bookmarks,
            tx,
        });
        self.publish_watch_count();
        Ok((id, rx))
    }
}

/// The continue token of a real API server (`storage.EncodeContinue`).
pub(super) fn encode_continue(rv: i64, start: &str) -> String {
    let json = format!(
        r#"{{"v":"meta.k8s.io/v1","rv":{rv},"start":{}}}"#,
        serde_json::to_string(start).expect("string")
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

pub(super) fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let v: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    match (v["rv"].as_i64(), v["start"].as_str()) {
        (Some(rv), Some(start)) if rv != 0 && !start.is_empty() => Ok((rv, start.to_owned())),
        _ => Err(ApiError::bad_request(&format!(
            "continue key is not valid: {token:?}"
        ))),
    }
}
