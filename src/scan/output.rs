//! The table and the summary line.

use super::ScanReport;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `1 violation, 2 migration candidates, 0 rollout risks; scanned 9 claims, 6 volumes, 3 workloads in all namespaces`
/// (`, 1 blocked migration` and `, 1 migration in progress` after the rollout risks when there
/// are any). Workloads are those that use claims.
pub fn summary_line(report: &ScanReport) -> String {
    let s = &report.summary;
    let n = &report.scanned;
    let scope = match &report.namespace {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".to_owned(),
    };
    let blocked = if s.migration_blocked > 0 {
        format!(
            ", {}",
            plural(
                s.migration_blocked,
                "blocked migration",
                "blocked migrations"
            )
        )
    } else {
        String::new()
    };
    let in_progress = if s.migrations_in_progress > 0 {
        format!(
            ", {}",
            plural(
                s.migrations_in_progress,
                "migration in progress",
                "migrations in progress"
            )
        )
    } else {
        String::new()
    };
    format!(
        "{}, {}, {}{blocked}{in_progress}; scanned {}, {}, {} in {scope}",
        plural(s.violations, "violation", "violations"),
        plural(
            s.migration_candidates,
            "migration candidate",
            "migration candidates"
        ),
        plural(s.rollout_risks, "rollout risk", "rollout risks"),
        plural(n.claims, "claim", "claims"),
        plural(n.volumes, "volume", "volumes"),
        plural(n.workloads, "workload", "workloads"),
    )
}

/// Aligned columns KIND, NAMESPACE, NAME, FINDING, DETAIL (one row per finding; `-` for
/// cluster-scoped objects), then the summary line.
pub fn render_table(report: &ScanReport) -> String {
    let mut out = String::new();
    if !report.findings.is_empty() {
        let header = ["KIND", "NAMESPACE", "NAME", "FINDING", "DETAIL"].map(str::to_owned);
        let rows: Vec<[String; 5]> = std::iter::once(header)
            .chain(report.findings.iter().map(|f| {
                [
                    f.object.kind.clone().unwrap_or_default(),
                    f.object.namespace.clone().unwrap_or_else(|| "-".to_owned()),
                    f.object.name.clone().unwrap_or_default(),
                    f.rule.to_string(),
                    f.detail.clone(),
                ]
            }))
            .collect();
        let mut widths = [0usize; 4];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            for (cell, w) in row.iter().zip(widths) {
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
            out.push_str(&row[4]);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&summary_line(report));
    out.push('\n');
    out
}
