//! The HTTP front: discovery, routing of a request to the store, responses and watch streams.

use super::*;

pub(super) fn json_response(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).expect("serializable")));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.status)
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = parse_query(uri.query());
    let logged_query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut entry = format!("{method} {}", uri.path());
    if !logged_query.is_empty() {
        entry.push('?');
        entry.push_str(&logged_query.join("&"));
    }
    lock(&shared.requests).push(entry.clone());
    {
        let mut fail = lock(&shared.fail);
        if fail.0 > 0 {
            fail.0 -= 1;
            return error_response(&ApiError::for_code(
                fail.1,
                "injected failure (fake apiserver)",
            ));
        }
    }
    let hold = {
        let mut holds = lock(&shared.holds);
        let found = holds.iter().position(|h| (h.matches)(&entry));
        found.map(|i| holds.remove(i))
    };
    if let Some(hold) = hold {
        let _ = hold.arrived.send(());
        // Released, or the test dropped its `Held`: served either way.
        let _ = hold.release.await;
    }
    if lock(&shared.forbidden)
        .iter()
        .any(|prefix| uri.path().starts_with(prefix.as_str()))
    {
        return error_response(&ApiError::for_code(
            403,
            &format!(
                "{method} {} is forbidden: the user cannot do this (fake apiserver)",
                uri.path()
            ),
        ));
    }
    if method == Method::GET
        && let Some(document) = discovery(&lock(&shared.store).defs, uri.path())
    {
        return json_response(200, &document);
    }
    let q = Query(pairs.into_iter().collect());
    match serve(&shared, &method, uri.path(), &q, &headers, &body) {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Watch(id, rx, timeout)) => watch_response(&shared, id, rx, timeout),
        Err(err) => error_response(&err),
    }
}

pub(super) enum Reply {
    Json(u16, Value),
    Watch(u64, mpsc::UnboundedReceiver<WatchMsg>, Duration),
}

pub(super) fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("the object provided is not valid JSON: {e}")))
}

/// The server's version: the minor the fixtures were captured from.
pub(super) const VERSION_MAJOR: &str = "1";
pub(super) const VERSION_MINOR: &str = "35";

/// Legacy discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`), built
/// from the resource table, as client-go's discovery and helm read it. None for other paths.
pub(super) fn discovery(defs: &[Arc<ResourceDef>], path: &str) -> Option<Value> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Each named group with its versions, in table order (the first one preferred).
    let groups = || {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for d in defs.iter().filter(|d| !d.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, versions)) if versions.contains(&d.version.as_str()) => {}
                Some((_, versions)) => versions.push(&d.version),
                None => groups.push((&d.group, vec![&d.version])),
            }
        }
        groups
    };
    let resources = |group: &str, version: &str| -> Option<Value> {
        let mut list = Vec::new();
        for d in defs
            .iter()
            .filter(|d| d.group == group && d.version == version)
        {
            list.push(json!({
                "name": d.plural, "singularName": d.kind.to_lowercase(), "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }));
            if d.scale_subresource {
                list.push(
                    json!({"name": format!("{}/scale", d.plural), "singularName": "",
                    "namespaced": d.namespaced, "group": "autoscaling", "version": "v1",
                    "kind": "Scale", "verbs": ["get", "patch", "update"]}),
                );
            }
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        (!list.is_empty()).then(|| {
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                   "groupVersion": group_version, "resources": list})
        })
    };
    match segments.as_slice() {
        ["version"] => Some(json!({
            "major": VERSION_MAJOR, "minor": VERSION_MINOR,
            "gitVersion": format!("v{VERSION_MAJOR}.{VERSION_MINOR}.0"),
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
            "platform": "linux/amd64"
        })),
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]})),
        ["apis"] => Some(json!({"kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups().into_iter().map(|(g, versions)| {
                let versions: Vec<Value> = versions.iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "preferredVersion": versions[0], "versions": versions})
            }).collect::<Vec<_>>()})),
        ["api", version] => resources("", version),
        ["apis", group, version] => resources(group, version),
        _ => None,
    }
}

pub(super) fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let t = lock(&shared.store).parse_path(path)?;
    if q.get("dryRun").is_some() {
        return Err(ApiError::not_implemented("dryRun"));
    }
    match (method.as_str(), t.name.is_some(), t.sub.is_some()) {
        ("GET", false, false) if q.flag("watch") => {
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_WATCH_TIMEOUT);
            let (id, rx) = lock(&shared.store).start_watch(&t, q)?;
            Ok(Reply::Watch(id, rx, timeout))
        }
        ("GET", _, _) if q.flag("watch") => Err(ApiError::not_implemented("watching one object")),
        ("GET", false, _) => Ok(Reply::Json(200, lock(&shared.store).list_at(&t, q)?)),
        ("GET", true, _) => Ok(Reply::Json(200, lock(&shared.store).get_view(&t)?)),
        ("POST", false, false) => {
            let obj = parse_body(body)?;
            let created = shared.with_store(|s| s.create_at(&t, obj, Mode::Http))?;
            Ok(Reply::Json(201, created))
        }
        ("PUT", true, _) => {
            let mut obj = Some(parse_body(body)?);
            let updated = shared.with_store(|s| {
                s.update_at(&t, Mode::Http, &mut |_| {
                    Ok(obj.take().expect("called once"))
                })
            })?;
            Ok(Reply::Json(200, updated))
        }
        ("PATCH", true, _) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !content_type.starts_with("application/merge-patch+json") {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    &format!(
                        "the fake API server implements only merge patches, not {content_type:?}"
                    ),
                    None,
                ));
            }
            let patch = parse_body(body)?;
            let updated = shared.with_store(|s| {
                s.update_at(&t, Mode::Http, &mut |mut current| {
                    json_patch::merge(&mut current, &patch);
                    Ok(current)
                })
            })?;
            Ok(Reply::Json(200, updated))
        }
        ("DELETE", true, false) => {
            let opts = delete_opts(body)?;
            let def = lock(&shared.store).defs[t.res].clone();
            match shared.with_store(|s| s.delete_at(&t, &opts))? {
                Deletion::Pending(obj) => Ok(Reply::Json(200, obj)),
                Deletion::Deleted(obj) if def.return_deleted_object => Ok(Reply::Json(200, obj)),
                Deletion::Deleted(obj) => {
                    let mut details =
                        ApiError::resource_details(&def, meta_str(&obj, "name").unwrap_or(""));
                    details["uid"] = meta_value(&obj, "uid").unwrap_or(Value::Null);
                    Ok(Reply::Json(
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                    ))
                }
            }
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )),
    }
}

/// The `DeleteOptions` body: `preconditions.uid` and `propagationPolicy: Orphan` (kube sends the
/// options in the body).
pub(super) fn delete_opts(body: &Bytes) -> Result<DeleteOpts, ApiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body)?
    };
    Ok(DeleteOpts {
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        orphan: body.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan"),
    })
}

pub(super) fn watch_response(
    shared: &Arc<Shared>,
    id: u64,
    rx: mpsc::UnboundedReceiver<WatchMsg>,
    timeout: Duration,
) -> Response {
    let guard = WatchGuard {
        shared: Arc::downgrade(shared),
        id,
    };
    let deadline = Box::pin(tokio::time::sleep(timeout));
    let stream = futures_util::stream::unfold(Some((rx, deadline, guard)), |state| async move {
        let (mut rx, mut deadline, guard) = state?;
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(WatchMsg::Line(line)) => Some((Ok::<Bytes, std::io::Error>(line), Some((rx, deadline, guard)))),
                Some(WatchMsg::Break) => Some((Err(std::io::Error::other("watch broken by the test")), None)),
                None => None,
            },
            () = &mut deadline => None,
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
