//! `scan --apply`: the scan's reports written to the cluster with server-side apply under one
//! field manager, and the reports rwop-guard wrote before that the scan no longer makes
//! deleted, so that a report never outlives what it says.
//!
//! Order: discovery first ([`check_crds`]: nothing is written when a report CRD is missing),
//! then the writes, then the deletions, [`CONCURRENCY`] requests at a time. Only reports
//! labelled [`MANAGED_BY`] are ever deleted (listed by that label, metadata only); other tools'
//! reports are never read or touched. A report holds at most [`MAX_RESULTS`] results: more are
//! split into `rwop-guard`, `rwop-guard.2`, `rwop-guard.3`, … (a dot cannot appear in a
//! namespace name, so these never collide with the `rwop-guard-NAMESPACE` cluster reports of
//! one-namespace scans), which keeps every object far below the API server's size limit.

use std::collections::HashSet;

use futures_util::{StreamExt, stream};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};

use super::inventory::{PAGE_SIZE, describe};
use super::reports::{MANAGED_BY, Report, ReportFormat, ReportSummary};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "rwop-guard";
/// Results per report object at most: ~500 bytes each, so a report stays well under the
/// API server's 1.5 MiB object limit (3 MiB request limit).
pub const MAX_RESULTS: usize = 500;
/// Writes (and deletions) in flight at a time.
pub const CONCURRENCY: usize = 4;

/// Why `scan --apply` stopped. Nothing is written when discovery fails.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "the API server serves no {missing} ({api_version}): install the report CRDs first \
         (check with `kubectl get crd {crds}`), or choose the other format"
    )]
    MissingCrds {
        /// The missing resources, e.g. `reports.openreports.io, clusterreports.openreports.io`.
        missing: String,
        api_version: &'static str,
        /// Both CRD names, space-separated.
        crds: String,
    },
    #[error("cannot discover {api_version}: {}", describe(.error))]
    Discovery {
        api_version: &'static str,
        error: kube::Error,
    },
    #[error("cannot write {kind} {name}: {}", describe(.error))]
    Write {
        kind: &'static str,
        name: String,
        error: kube::Error,
    },
    #[error("cannot list {resource} (to delete rwop-guard's stale reports): {}", describe(.error))]
    List {
        resource: String,
        error: kube::Error,
    },
    #[error("cannot delete {kind} {name}: {}", describe(.error))]
    Delete {
        kind: &'static str,
        name: String,
        error: kube::Error,
    },
}

/// What [`apply`] did. Names are `NAMESPACE/NAME` for namespaced reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: Vec<String>,
    pub written_cluster: Vec<String>,
    pub deleted: Vec<String>,
    pub deleted_cluster: Vec<String>,
    /// Namespaces being deleted, or deleted since the scan listed them: their reports could not
    /// be written (the namespace's deletion removes them).
    pub terminating: Vec<String>,
}

/// `Ok(())` when the API server serves both report resources of `format`.
pub async fn check_crds(client: &Client, format: ReportFormat) -> Result<(), ApplyError> {
    let api_version = format.api_version();
    let (namespaced, cluster) = format.resources();
    let served: Vec<String> = match client.list_api_group_resources(api_version).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(error) => return Err(ApplyError::Discovery { api_version, error }),
    };
    let crd = |resource: &str| format!("{resource}.{}", format.group());
    let missing: Vec<String> = [namespaced, cluster]
        .into_iter()
        .filter(|r| !served.iter().any(|s| s == r))
        .map(crd)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApplyError::MissingCrds {
        missing: missing.join(", "),
        api_version,
        crds: format!("{} {}", crd(namespaced), crd(cluster)),
    })
}

/// The objects to write for `reports` (as [`super::reports`] made them) in scope `namespace`:
/// reports without results are left out (they are deleted, if they exist); with a namespace,
/// only that namespace's report (the cluster report is neither written nor deleted); and
/// reports of more than [`MAX_RESULTS`] results split into several.
pub fn plan(reports: Vec<Report>, namespace: Option<&str>) -> Vec<Report> {
    let mut out = Vec::new();
    for report in reports {
        let in_scope = match (&report.metadata.namespace, namespace) {
            (None, Some(_)) => false,
            (Some(ns), Some(scope)) => ns == scope,
            (_, None) => true,
        };
        if !in_scope || report.results.is_empty() {
            continue;
        }
        let Report {
            api_version,
            kind,
            metadata,
            source,
            results,
            ..
        } = report;
        let mut rest = results.into_iter();
        for part in 1.. {
            let results: Vec<_> = rest.by_ref().take(MAX_RESULTS).collect();
            if results.is_empty() {
                break;
            }
            let mut metadata = metadata.clone();
            if part > 1 {
                metadata.name = format!("{}.{part}", metadata.name);
            }
            out.push(Report {
                api_version,
                kind,
                metadata,
                source,
                summary: ReportSummary::of(&results),
                results,
            });
        }
    }
    out
}

/// Writes `reports` (from [`plan`]) with server-side apply (field manager [`FIELD_MANAGER`],
/// forced), then deletes the reports labelled [`MANAGED_BY`] in scope that are not among them:
/// with `namespace`, that namespace's; without, every namespace's and the cluster reports.
/// `progress` gets a line now and then. Call [`check_crds`] first.
pub async fn apply(
    client: &Client,
    format: ReportFormat,
    reports: Vec<Report>,
    namespace: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<Applied, ApplyError> {
    let (namespaced_kind, cluster_kind) = format.kinds();
    let (namespaced_plural, cluster_plural) = format.resources();
    let resource = |kind: &str, plural: &str| {
        let (group, version) = format
            .api_version()
            .split_once('/')
            .unwrap_or((format.group(), ""));
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    let namespaced_resource = resource(namespaced_kind, namespaced_plural);
    let cluster_resource = resource(cluster_kind, cluster_plural);
    let params = PatchParams::apply(FIELD_MANAGER).force();

    let mut applied = Applied::default();
    let mut keep: HashSet<(Option<String>, String)> = HashSet::new();
    let total = reports.len();
    let mut writes = stream::iter(reports.into_iter().map(|report| {
        let namespace = report.metadata.namespace.clone();
        let name = report.metadata.name.clone();
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &namespaced_resource),
            None => Api::all_with(client.clone(), &cluster_resource),
        };
        let params = &params;
        async move {
            let result = api.patch(&name, params, &Patch::Apply(&report)).await;
            (report.kind, namespace, name, result.map(|_| ()))
        }
    }))
    .buffer_unordered(CONCURRENCY);
    let mut done = 0usize;
    while let Some((kind, namespace, name, result)) = writes.next().await {
        done += 1;
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if terminating(&status) => {
                if let Some(ns) = &namespace
                    && !applied.terminating.contains(ns)
                {
                    applied.terminating.push(ns.clone());
                }
                continue;
            }
            Err(error) => {
                return Err(ApplyError::Write {
                    kind,
                    name: display(namespace.as_deref(), &name),
                    error,
                });
            }
        }
        match &namespace {
            Some(ns) => applied.written.push(display(Some(ns), &name)),
            None => applied.written_cluster.push(name.clone()),
        }
        keep.insert((namespace, name));
        if done.is_multiple_of(100) && done < total {
            progress(&format!("wrote {done} of {total} reports…"));
        }
    }
    drop(writes);
    applied.written.sort();
    applied.written_cluster.sort();

    // Prune: ours (by label), in scope, not written now.
    let namespaced_api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &namespaced_resource),
        None => Api::all_with(client.clone(), &namespaced_resource),
    };
    let plural = |p: &str| format!("{p}.{}", format.group());
    let old = stale(&namespaced_api, &plural(namespaced_plural), &keep).await?;
    applied.deleted = delete(client, &namespaced_resource, namespaced_kind, old).await?;
    if namespace.is_none() {
        let cluster_api: Api<DynamicObject> = Api::all_with(client.clone(), &cluster_resource);
        let old = stale(&cluster_api, &plural(cluster_plural), &keep).await?;
        applied.deleted_cluster = delete(client, &cluster_resource, cluster_kind, old).await?;
    }
    Ok(applied)
}

/// A write refused because its namespace is being deleted, or is gone (deleted since the scan
/// listed its claims).
fn terminating(status: &kube::core::Status) -> bool {
    let Some(details) = &status.details else {
        return false;
    };
    (status.code == 403
        && details
            .causes
            .iter()
            .any(|c| c.reason == "NamespaceTerminating"))
        || (status.code == 404 && details.kind == "namespaces")
}

fn display(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// (namespace, name) of the reports of `api` labelled [`MANAGED_BY`] that are not in `keep`,
/// listed as metadata only, [`PAGE_SIZE`] a page.
async fn stale(
    api: &Api<DynamicObject>,
    resource: &str,
    keep: &HashSet<(Option<String>, String)>,
) -> Result<Vec<(Option<String>, String)>, ApplyError> {
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let mut stale = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().labels(&selector).limit(PAGE_SIZE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api
            .list_metadata(&params)
            .await
            .map_err(|error| ApplyError::List {
                resource: resource.to_owned(),
                error,
            })?;
        for item in page.items {
            let Some(name) = item.metadata.name else {
                continue;
            };
            let key = (item.metadata.namespace, name);
            if !keep.contains(&key) {
                stale.push(key);
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(stale);
        }
    }
}

/// Deletes `objects`, [`CONCURRENCY`] at a time; one already gone is no error. Returns their
/// names, sorted.
async fn delete(
    client: &Client,
    resource: &ApiResource,
    kind: &'static str,
    objects: Vec<(Option<String>, String)>,
) -> Result<Vec<String>, ApplyError> {
    let mut deletions = stream::iter(objects.into_iter().map(|(namespace, name)| {
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
            None => Api::all_with(client.clone(), resource),
        };
        async move {
            let result = api.delete(&name, &DeleteParams::default()).await;
            (display(namespace.as_deref(), &name), result)
        }
    }))
    .buffer_unordered(CONCURRENCY);
    let mut deleted = Vec::new();
    while let Some((name, result)) = deletions.next().await {
        match result {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(ApplyError::Delete { kind, name, error }),
        }
    }
    deleted.sort();
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ObjectReference;

    use super::*;
    use crate::scan::reports::{
        REPORT_POLICY, ReportMeta, ReportResult, ReportTimestamp, ResultStatus, Severity,
    };

    fn result(status: ResultStatus, name: usize) -> ReportResult {
        ReportResult {
            policy: REPORT_POLICY,
            rule: "V1",
            result: status,
            scored: true,
            severity: Severity::High,
            category: "ReadWriteOncePod",
            source: REPORT_POLICY,
            timestamp: ReportTimestamp {
                seconds: 1,
                nanos: 0,
            },
            message: String::new(),
            resources: vec![ObjectReference {
                name: Some(format!("c{name}")),
                ..ObjectReference::default()
            }],
            properties: BTreeMap::new(),
        }
    }

    fn report(namespace: Option<&str>, results: Vec<ReportResult>) -> Report {
        Report {
            api_version: "openreports.io/v1alpha1",
            kind: if namespace.is_some() {
                "Report"
            } else {
                "ClusterReport"
            },
            metadata: ReportMeta {
                name: REPORT_POLICY.to_owned(),
                namespace: namespace.map(str::to_owned),
                labels: BTreeMap::from([MANAGED_BY]),
            },
            source: Some(REPORT_POLICY),
            summary: ReportSummary::of(&results),
            results,
        }
    }

    fn heads(reports: &[Report]) -> Vec<(Option<&str>, &str, usize, usize, usize)> {
        reports
            .iter()
            .map(|r| {
                (
                    r.metadata.namespace.as_deref(),
                    r.metadata.name.as_str(),
                    r.results.len(),
                    r.summary.pass,
                    r.summary.warn,
                )
            })
            .collect()
    }

    #[test]
    fn plan_splits_large_reports_drops_empty_ones_and_keeps_to_the_namespace() {
        let big: Vec<ReportResult> = (0..MAX_RESULTS * 2 + 3)
            .map(|i| {
                let status = if i < 10 {
                    ResultStatus::Warn
                } else {
                    ResultStatus::Pass
                };
                result(status, i)
            })
            .collect();
        let reports = || {
            vec![
                report(Some("big"), big.clone()),
                report(Some("empty"), Vec::new()),
                report(Some("small"), vec![result(ResultStatus::Pass, 0)]),
                report(None, vec![result(ResultStatus::Pass, 1)]),
            ]
        };
        let all = plan(reports(), None);
        assert_eq!(
            heads(&all),
            [
                (Some("big"), "rwop-guard", MAX_RESULTS, MAX_RESULTS - 10, 10),
                (Some("big"), "rwop-guard.2", MAX_RESULTS, MAX_RESULTS, 0),
                (Some("big"), "rwop-guard.3", 3, 3, 0),
                (Some("small"), "rwop-guard", 1, 1, 0),
                (None, "rwop-guard", 1, 1, 0),
            ]
        );
        // Every result once, in order.
        let names: Vec<&str> = all[..3]
            .iter()
            .flat_map(|r| &r.results)
            .filter_map(|r| r.resources[0].name.as_deref())
            .collect();
        let want: Vec<String> = (0..big.len()).map(|i| format!("c{i}")).collect();
        assert_eq!(names, want);
        // With a namespace: its report only, never the cluster report.
        assert_eq!(
            heads(&plan(reports(), Some("small"))),
            [(Some("small"), "rwop-guard", 1, 1, 0)]
        );
        assert!(plan(reports(), Some("empty")).is_empty());
    }
}
