//! GET, LIST (pages with continue tokens, snapshots at a resourceVersion) and WATCH.

use super::*;

impl Store {
    pub(super) fn get_view(&self, t: &Target) -> Result<Value, ApiError> {
        let def = &self.defs[t.res];
        let name = t.name.as_deref().expect("object path");
        let obj = self.objects[t.res]
            .get(&Self::key(def, t.namespace.as_deref(), name))
            .ok_or_else(|| ApiError::not_found(def, name))?;
        Ok(view_of(def, view_for(t), obj))
    }

    pub(super) fn list_at(&self, t: &Target, q: &Query) -> Result<Value, ApiError> {
        let def = self.defs[t.res].clone();
        let filter = Filter::from_query(t.namespace.as_deref(), None, q)?;
        let limit = match q.get("limit") {
            None | Some("") => 0usize,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(&format!("invalid limit: {l}")))?
                .max(0) as usize,
        };
        let rv_param = q.get("resourceVersion").unwrap_or("");
        let rv_match = q.get("resourceVersionMatch").unwrap_or("");
        let cont = q.get("continue").unwrap_or("");
        let mut errs = Vec::new();
        if !rv_match.is_empty() {
            if rv_param.is_empty() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !cont.is_empty() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            match rv_match {
                "NotOlderThan" => {}
                "Exact" if rv_param == "0" => errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                )),
                "Exact" => {}
                other => errs.push(FieldError {
                    field: "resourceVersionMatch".into(),
                    kind: FieldErrorKind::NotSupported(Value::from(other).to_string()),
                    detail: "supported values: \"Exact\", \"NotOlderThan\"".into(),
                }),
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid_list_options(&errs));
        }

        let prefix = t
            .namespace
            .as_ref()
            .filter(|_| def.namespaced)
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default();
        let (list_rv, start) = if !cont.is_empty() {
            if !rv_param.is_empty() && rv_param != "0" {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (token_rv, start) = decode_continue(cont)?;
            if token_rv < 0 {
                (self.rv, start)
            } else if (token_rv as u64) < self.compacted {
                let mut err = ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a \
                     new list without the continue parameter, or use the continue token in this response to retrieve \
                     the remainder of the results. Continuing with the provided token results in an inconsistent list \
                     - objects that were created, modified, or deleted between the time the first chunk was returned \
                     and now may show up in the list.",
                );
                err.status["metadata"] = json!({"continue": encode_continue(-1, &start)});
                return Err(err);
            } else {
                (token_rv as u64, start)
            }
        } else if rv_param.is_empty() || rv_param == "0" {
            (self.rv, String::new())
        } else {
            let wanted: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(&format!("invalid resource version: {rv_param}"))
            })?;
            if wanted > self.rv {
                return Err(ApiError::too_large_resource_version(wanted, self.rv));
            }
            if rv_match == "Exact" {
                if wanted < self.compacted {
                    return Err(ApiError::expired(
                        "The resourceVersion for the provided list is too old.",
                    ));
                }
                (wanted, String::new())
            } else {
                (self.rv, String::new())
            }
        };

        let snapshot;
        let state = if list_rv == self.rv {
            &self.objects[t.res]
        } else {
            snapshot = self.state_at(t.res, list_rv);
            &snapshot
        };
        let mut items = Vec::new();
        let mut last_key: Option<&str> = None;
        let mut remaining = 0u64;
        let from = format!("{prefix}{start}");
        for (key, obj) in state.range(from..) {
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
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if remaining > 0 {
            let last = last_key.expect("a full page has a last key");
            metadata["continue"] = encode_continue(list_rv as i64, &format!("{last}\u{0}")).into();
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
        let filter = Filter::from_query(t.namespace.as_deref(), t.name.as_deref(), q)?;
        let rv_param = q.get("resourceVersion").unwrap_or("");
        let bookmarks = q.flag("allowWatchBookmarks");
        if ["sendInitialEvents", "resourceVersionMatch"]
            .iter()
            .any(|p| q.get(p).is_some())
        {
            return Err(ApiError::bad_request(
                "sendInitialEvents and resourceVersionMatch on a watch are not implemented by the fake API server",
            ));
        }
        let wanted: u64 = if rv_param.is_empty() {
            0
        } else {
            rv_param.parse().map_err(|_| {
                ApiError::bad_request(&format!("invalid resource version: {rv_param}"))
            })?
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_watch_id;
        self.next_watch_id += 1;

        if wanted > self.rv {
            let err = ApiError::too_large_resource_version(wanted, self.rv);
            let _ = tx.send(WatchMsg::Line(Self::line("ERROR", err.status)));
            return Ok((id, rx));
        }
        if wanted == 0 {
            let prefix = t
                .namespace
                .as_ref()
                .filter(|_| def.namespaced)
                .map(|ns| format!("{ns}/"));
            for (key, obj) in &self.objects[t.res] {
                if prefix
                    .as_ref()
                    .is_some_and(|p| !key.starts_with(p.as_str()))
                    || !filter.matches(obj)
                {
                    continue;
                }
                let _ = tx.send(WatchMsg::Line(Self::line("ADDED", render(&def, obj))));
            }
        } else {
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
    let invalid = |why: &str| ApiError::bad_request(&format!("continue key is not valid: {why}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| invalid("illegal base64 data"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| invalid("not JSON"))?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("encoded start key empty"))?;
    if start.starts_with('/') || start.contains("..") {
        return Err(invalid("path traversal attempt"));
    }
    let rv = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|rv| *rv != 0)
        .ok_or_else(|| invalid("incorrect encoded start resourceVersion"))?;
    Ok((rv, start.to_string()))
}
