//! Criterion benchmarks of one AdmissionReview answered in process: decode → decide → encode
//! (`rwop_guard::admission::review`), no HTTP, no TLS.
//!
//! Bodies are the captured fixtures re-serialized compact (key order kept), which is the form the
//! API server sends on the wire. Each case checks its outcome once before
//! measuring, so a policy change that moves a case onto another path fails loudly instead of
//! silently benchmarking something else.
//!
//! Run: `cargo bench --bench review` (about a minute).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rwop_guard::admission::{Webhook, review};
use rwop_guard::policy::{Facts, Policy};

struct Case {
    name: &'static str,
    fixture: &'static str,
    webhook: Webhook,
    mutation: bool,
    outcome: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "pvc_create_validate",
        fixture: "01-pvc-create-rwo.pvc.validate.json",
        webhook: Webhook::Validate,
        mutation: false,
        outcome: "allowed",
    },
    Case {
        name: "pvc_create_mutate",
        fixture: "31-pvc-create-no-sc-default-class-filled.pvc.mutate.json",
        webhook: Webhook::Mutate,
        mutation: true,
        outcome: "mutated",
    },
    Case {
        name: "pv_update_allowed_w1",
        fixture: "05-pv-patch-rwo-to-rwop.pv.validate.json",
        webhook: Webhook::Validate,
        mutation: false,
        outcome: "warned",
    },
    Case {
        name: "pv_update_denied",
        fixture: "06b-pv-patch-rwx-to-rwop.pv.validate.json",
        webhook: Webhook::Validate,
        mutation: false,
        outcome: "denied",
    },
    Case {
        name: "pv_delete",
        fixture: "17-pv-delete.pv.validate.json",
        webhook: Webhook::Validate,
        mutation: false,
        outcome: "allowed",
    },
];

const MUTATION_POLICY: &str = "mutation:\n  enabled: true\n  storageClasses: [fast-csi]\n";

fn fixture(name: &str) -> Vec<u8> {
    let raw = rwop_test_support::fixtures::admission(name);
    let value: serde_json::Value = serde_json::from_slice(&raw).expect("fixture is JSON");
    serde_json::to_vec(&value).expect("JSON")
}

fn bench_review(c: &mut Criterion) {
    let default_policy = Policy::default();
    let mutation_policy = Policy::from_yaml(MUTATION_POLICY, "bench").expect("bench policy");
    let facts = Facts::default();

    let mut group = c.benchmark_group("review");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for case in CASES {
        let body = fixture(case.fixture);
        let policy = if case.mutation {
            &mutation_policy
        } else {
            &default_policy
        };
        let reviewed = review(case.webhook, policy, &facts, &body)
            .unwrap_or_else(|e| panic!("{}: {e}", case.fixture));
        assert_eq!(
            reviewed.summary.outcome, case.outcome,
            "{}: unexpected outcome",
            case.fixture
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| {
                review(
                    black_box(case.webhook),
                    black_box(policy),
                    black_box(&facts),
                    black_box(&body),
                )
            })
        });
    }
    group.finish();
}

/// Where the time of one review goes, for the PV UPDATE case (05): a bare JSON scan of the body
/// (the floor for any decode), kube's typed decode of the whole review (object and oldObject,
/// what `review` avoids by decoding the policy's `Volume`), the decision alone, and building +
/// encoding the response.
fn bench_parts(c: &mut Criterion) {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
    use rwop_guard::admission::encode;
    use rwop_guard::policy::{Volume, validate_volume};

    let body = fixture("05-pv-patch-rwo-to-rwop.pv.validate.json");
    let mut group = c.benchmark_group("review_parts");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_scan_ignored_any", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body)).unwrap())
    });
    group.bench_function("decode_whole_pv_review", |b| {
        b.iter(|| {
            serde_json::from_slice::<AdmissionReview<PersistentVolume>>(black_box(&body)).unwrap()
        })
    });

    let policy = Policy::default();
    let review: AdmissionReview<Volume> = serde_json::from_slice(&body).unwrap();
    let req: AdmissionRequest<Volume> = review.try_into().unwrap();
    let new = req.object.as_ref().unwrap();
    group.bench_function("decide_validate_volume", |b| {
        b.iter(|| {
            validate_volume(
                black_box(&policy),
                &req.operation,
                black_box(new),
                req.old_object.as_ref(),
            )
        })
    });
    let decision = validate_volume(&policy, &req.operation, new, req.old_object.as_ref());
    group.bench_function("encode_response", |b| {
        b.iter(|| {
            let mut response = AdmissionResponse::from(black_box(&req));
            response.warnings = Some(decision.warnings.clone());
            response.audit_annotations = decision.audit.clone().into_iter().collect();
            encode(response).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_review, bench_parts);
criterion_main!(benches);
