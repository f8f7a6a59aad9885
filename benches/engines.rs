//! PersistentVolume update latency through a real API server, side by side in one run: no
//! admission, the in-tree objects (the chart's `engine.mode=inTree`: ValidatingAdmissionPolicy
//! and MutatingAdmissionPolicy; and its ValidatingAdmissionPolicies alone), and the webhook (`rwop-guard serve` registered with the chart's
//! `engine.mode=webhook` configurations).
//!
//! The control plane is the e2e suite's (`KUBEBUILDER_ASSETS`, tests/e2e/harness). The request
//! is a server-side dry run of `spec.accessModes: [ReadWriteOnce] -> [ReadWriteOncePod]` on an
//! unbound, retained CSI volume: allowed by every engine, reviewed by both (it changes the
//! modes), no warning, and no etcd write, so what differs between the modes is admission. Sent
//! one at a time from a kube client in this process; the modes take turns in rounds, so that
//! drift of the shared machine spreads over all three.
//!
//!   KUBEBUILDER_ASSETS=DIR cargo bench --bench engines [-- ROUNDS REQUESTS]

#[allow(dead_code, unused_imports)]
#[path = "../tests/e2e/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use harness::webhook::Chart;
use harness::{Env, csi_volume, wait_until};

const VOLUME: &str = "bench-pv";
const PROBE: &str = "bench-probe";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the numbers are the only other arguments.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = numbers.first().copied().unwrap_or(5);
    let requests = numbers.get(1).copied().unwrap_or(200);
    let Some(assets) = harness::assets()? else {
        println!("engines: skipped: KUBEBUILDER_ASSETS is not set (see tests/e2e)");
        return Ok(());
    };
    let load_start = load_average();
    let dir = tempfile::Builder::new().prefix("rwop-bench-").tempdir()?;
    let env = Env::start(&assets, dir.path()).context("the control plane")?;
    let mut volume = csi_volume(VOLUME, &["ReadWriteOnce"]);
    volume["spec"]["storageClassName"] = "bench-none".into();
    let mut probe = csi_volume(PROBE, &["ReadWriteMany"]);
    probe["spec"]["storageClassName"] = "bench-none".into();
    env.apply(&[volume, probe])?;

    let webhooks = env.chart.webhook_configurations(env.serve().addr);
    let in_tree = Chart::render(
        "bench",
        &env.tls.ca_file,
        &[
            "engine.mode=inTree",
            "engine.mutatingAdmissionPolicy=v1beta1",
        ],
    )?
    .documents
    .into_iter()
    .filter(|d| {
        d["kind"]
            .as_str()
            .is_some_and(|k| k.contains("AdmissionPolicy"))
    })
    .collect::<Vec<Value>>();

    let validating: Vec<Value> = in_tree
        .iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("Validating"))
        })
        .cloned()
        .collect();

    let api: Api<PersistentVolume> = Api::all(env.client.clone());
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let modes = [
        "no admission",
        "in-tree, ValidatingAdmissionPolicies only",
        "in-tree (the chart's default: VAP + MAP for M2)",
        "webhook",
    ];
    for round in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            match m {
                0 => {
                    delete(&env, &webhooks)?;
                    delete(&env, &in_tree)?;
                    wait_answered_by(&env, None)?;
                }
                1 => {
                    env.apply(&validating)?;
                    wait_answered_by(&env, Some("ValidatingAdmissionPolicy"))?;
                }
                2 => {
                    env.apply(&in_tree)?;
                    wait_answered_by(&env, Some("ValidatingAdmissionPolicy"))?;
                }
                _ => {
                    delete(&env, &in_tree)?;
                    env.apply(&webhooks)?;
                    wait_answered_by(&env, Some("admission webhook"))?;
                }
            }
            let times = env.rt.block_on(measure(&api, requests))?;
            eprintln!(
                "round {round}: {mode}: p50 {:.3} ms",
                ms(percentile(&times, 0.5))
            );
            samples[m].extend(times);
        }
    }

    let base = percentile(&samples[0], 0.5);
    println!(
        "\n{} rounds x {} requests per mode, PV update (dry run, [ReadWriteOnce] -> \
         [ReadWriteOncePod]) through kube-apiserver; load average {} at the start, {} at the end\n",
        rounds,
        requests,
        load_start,
        load_average()
    );
    println!("| admission | p50 | p90 | p99 | mean | p50 added |");
    println!("|---|---|---|---|---|---|");
    for (mode, times) in modes.iter().zip(&samples) {
        let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
        println!(
            "| {mode} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:+.3} ms |",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.9)),
            ms(percentile(times, 0.99)),
            ms(mean),
            ms(percentile(times, 0.5)) - ms(base),
        );
    }
    Ok(())
}

async fn measure(api: &Api<PersistentVolume>, requests: usize) -> anyhow::Result<Vec<Duration>> {
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let patch = Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteOncePod"]}}));
    // Warm the connection and the API server's caches first.
    for _ in 0..20 {
        api.patch(VOLUME, &params, &patch).await?;
    }
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let start = Instant::now();
        let pv = api.patch(VOLUME, &params, &patch).await?;
        times.push(start.elapsed());
        anyhow::ensure!(
            pv.spec.and_then(|s| s.access_modes) == Some(vec!["ReadWriteOncePod".to_owned()]),
            "the dry run did not change the modes"
        );
    }
    Ok(times)
}

fn delete(env: &Env, objects: &[Value]) -> anyhow::Result<()> {
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default().to_lowercase();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        env.kubectl(&["delete", "--ignore-not-found", &format!("{kind}/{name}")])
            .success()?;
    }
    Ok(())
}

/// Waits until a V2 denial of the probe volume names `who` (None: no denial at all).
fn wait_answered_by(env: &Env, who: Option<&str>) -> anyhow::Result<()> {
    wait_until(
        &format!("PV updates to be answered by {who:?}"),
        Duration::from_secs(30),
        || {
            let out = env.kubectl(&[
                "patch",
                "pv",
                PROBE,
                "--dry-run=server",
                "--type=merge",
                "-p",
                r#"{"spec":{"accessModes":["ReadWriteOncePod"]}}"#,
            ]);
            Ok(match who {
                None => out.ok().then_some(()),
                Some(who) => (!out.ok() && out.stderr.contains(who)).then_some(()),
            })
        },
    )
}

fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The 1-minute load average: the machine is shared, and the figures mean little under load.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}
