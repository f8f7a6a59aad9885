//! What decoding one review holds in memory, counted by a global allocator: the reason the
//! webhook decodes the policy's `Claim` and `Volume` (`src/policy/objects.rs`) and not whole
//! objects. A client that can write PersistentVolumes
//! can make every review carry two objects of ~1.5 MiB (annotations and their managedFields);
//! the server admits up to `--max-buffered-bytes` of such bodies at once, so what decoding one
//! holds beyond its body multiplies against the chart's 64 MiB memory limit.
//!
//! `cargo test --test decode_memory -- --nocapture` prints both figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::core::admission::AdmissionReview;
use rwop_guard::admission::{Webhook, review};
use rwop_guard::policy::{Facts, Policy};
use serde_json::{Map, Value, json};

/// Counts live heap bytes and their peak (the test crate has one test: nothing else allocates).
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(
            LIVE.fetch_add(layout.size(), SeqCst) + layout.size(),
            SeqCst,
        );
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A PersistentVolume with `n` annotations set by kubectl, as the API server stores it.
fn volume(n: usize, modes: &[&str]) -> Value {
    let annotations: Map<String, Value> = (0..n)
        .map(|i| (format!("example.com/a{i:06}"), json!("v")))
        .collect();
    let fields: Map<String, Value> = (0..n)
        .map(|i| (format!("f:example.com/a{i:06}"), json!({})))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pv", "annotations": annotations, "managedFields": [{
            "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": fields}}}]},
        "spec": {"accessModes": modes, "capacity": {"storage": "1Gi"},
            "csi": {"driver": "d", "volumeHandle": "h"}, "persistentVolumeReclaimPolicy": "Retain"}
    })
}

/// Peak heap bytes held while answering `body`, beyond what was live before.
fn peak_of(answer: impl FnOnce() -> usize) -> usize {
    let base = LIVE.load(SeqCst);
    PEAK.store(base, SeqCst);
    let answer_len = answer();
    assert!(answer_len > 0);
    PEAK.load(SeqCst) - base
}

#[test]
fn a_review_holds_little_beyond_its_body() {
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "PersistentVolume"},
            "resource": {"group": "", "version": "v1", "resource": "persistentvolumes"},
            "name": "pv", "operation": "UPDATE", "userInfo": {"username": "me"},
            "object": volume(20_000, &["ReadWriteOncePod"]),
            "oldObject": volume(20_000, &["ReadWriteOnce"]),
        }
    }))
    .unwrap();
    let (policy, facts) = (Policy::default(), Facts::default());
    let kept = peak_of(|| {
        review(Webhook::Validate, &policy, &facts, &body)
            .unwrap()
            .body
            .len()
    });
    // For comparison: kube's decode of the whole review, object and oldObject.
    let whole = peak_of(|| {
        let r: AdmissionReview<PersistentVolume> = serde_json::from_slice(&body).unwrap();
        r.request.map_or(0, |r| r.uid.len())
    });
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "a {:.2} MiB review: answering it holds {:.1} KiB beyond the body at its peak, \
         decoding its whole objects {:.2} MiB",
        mib(body.len()),
        kept as f64 / 1024.0,
        mib(whole)
    );
    assert!(kept < body.len() / 8, "{kept} bytes");
}
