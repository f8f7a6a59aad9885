//! Prometheus metrics, all prefixed `rwop_guard_`.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cluster::CacheMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub webhook: &'static str,
    /// `PersistentVolume`, `PersistentVolumeClaim` or `other` (bounded label values).
    pub kind: &'static str,
    pub operation: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub webhook: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// `webhook` (the TLS port) or `metrics`.
    pub listener: &'static str,
}

/// Every `reason` of `rwop_guard_connections_closed_total` (`connections::Close`, which checks
/// that it says the same).
pub const CLOSE_REASONS: [&str; 7] = [
    "closed",
    "header_timeout",
    "idle_timeout",
    "tls_failed",
    "plain_http",
    "connection_limit",
    "shutdown",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub listener: &'static str,
    /// Why the connection ended (see `connections::Close`).
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<WebhookLabel, Histogram>,
    pub mutations: Counter,
    pub rejected: Family<ErrorLabels, Counter>,
    pub panics: Counter,
    pub in_flight: Gauge,
    pub tls_reloads: Family<ResultLabel, Counter>,
    pub policy_reloads: Family<ResultLabel, Counter>,
    pub cert_not_after: Gauge,
    pub ready: Gauge,
    /// The cluster caches' own metrics (empty without cluster access).
    pub cache: CacheMetrics,
    /// Bytes of the request body budget held by requests now.
    pub buffered_body_bytes: Gauge,
    pub connections_open: Family<ListenerLabel, Gauge>,
    pub connections_limited: Family<ListenerLabel, Counter>,
    pub connections_closed: Family<ClosedLabels, Counter>,
    /// Mirrors `logging::dropped_total()` at each scrape.
    log_lines_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_cache(CacheMetrics::default())
    }

    /// With the metrics of the cluster caches that feed the facts.
    pub fn with_cache(cache: CacheMetrics) -> Self {
        let mut registry = Registry::with_prefix("rwop_guard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "AdmissionReviews answered, by webhook, object kind, operation and decision",
            requests.clone(),
        );
        // 10 µs .. ~40 ms: decisions take microseconds; the tail shows contention.
        let latency = Family::<WebhookLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_01, 2.0, 13,
            ))
        });
        registry.register(
            "request_duration_seconds",
            "Time to decode, decide and encode one AdmissionReview",
            latency.clone(),
        );
        let mutations = Counter::default();
        registry.register(
            "mutations",
            "Claims rewritten to ReadWriteOncePod",
            mutations.clone(),
        );
        let rejected = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests answered with an HTTP error (400 bad review, 413 too large, 415 wrong content type, 408 timeout, 503 body budget spent)",
            rejected.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "panics",
            "Requests that panicked (answered 500)",
            panics.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests on the TLS port being handled now",
            in_flight.clone(),
        );
        let tls_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate reloads, by result (ok, failed)",
            tls_reloads.clone(),
        );
        let policy_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy file reloads, by result (ok, failed)",
            policy_reloads.clone(),
        );
        let cert_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_seconds",
            "notAfter of the served certificate, Unix seconds",
            cert_not_after.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when /readyz answers 200", ready.clone());
        cache.register(&mut registry);
        let buffered_body_bytes = Gauge::default();
        registry.register(
            "buffered_body_bytes",
            "Bytes of the request body budget (--max-buffered-bytes) held by requests now",
            buffered_body_bytes.clone(),
        );
        let connections_open = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "connections_open",
            "Open connections, by listener (webhook, metrics)",
            connections_open.clone(),
        );
        let connections_limited = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "connections_limited",
            "Connections that found the listener at its connection limit and waited for a free slot",
            connections_limited.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections closed, by listener and reason (closed, header_timeout, idle_timeout, \
             tls_failed, plain_http, connection_limit, shutdown)",
            connections_closed.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr did not keep up",
            log_lines_dropped.clone(),
        );
        // Labelled counters appear at their first sample, and `increase()` does not count the
        // appearance: a first reload failure, rejection or TLS failure would never alert.
        // Every label value the alerts and the dashboard select starts at 0.
        for result in ["ok", "failed"] {
            let _ = tls_reloads.get_or_create(&ResultLabel { result });
            let _ = policy_reloads.get_or_create(&ResultLabel { result });
        }
        for webhook in ["validate", "mutate"] {
            for code in [400, 408, 413, 415, 503] {
                let _ = rejected.get_or_create(&ErrorLabels { webhook, code });
            }
        }
        for listener in ["webhook", "metrics"] {
            let _ = connections_open.get_or_create(&ListenerLabel { listener });
            let _ = connections_limited.get_or_create(&ListenerLabel { listener });
            for reason in CLOSE_REASONS {
                let _ = connections_closed.get_or_create(&ClosedLabels { listener, reason });
            }
        }
        Self {
            registry,
            requests,
            latency,
            mutations,
            rejected,
            panics,
            in_flight,
            tls_reloads,
            policy_reloads,
            cert_not_after,
            ready,
            cache,
            buffered_body_bytes,
            connections_open,
            connections_limited,
            connections_closed,
            log_lines_dropped,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        // The log writer counts process-wide; a counter never goes down, even with two scrapes
        // racing here.
        self.log_lines_dropped
            .inner()
            .fetch_max(crate::logging::dropped_total(), Ordering::Relaxed);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reload(family: &Family<ResultLabel, Counter>, ok: bool) {
        family
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    /// The series the alerts select exist at 0 before their first event, so `increase()` sees
    /// that event (a series born at 1 has no increase).
    #[test]
    fn alerted_series_start_at_zero() {
        let text = Metrics::new().encode();
        for series in [
            r#"rwop_guard_policy_reloads_total{result="failed"} 0"#,
            r#"rwop_guard_tls_reloads_total{result="failed"} 0"#,
            r#"rwop_guard_rejected_requests_total{webhook="validate",code="408"} 0"#,
            r#"rwop_guard_connections_closed_total{listener="webhook",reason="tls_failed"} 0"#,
            r#"rwop_guard_connections_limited_total{listener="webhook"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "{series} not in:\n{text}"
            );
        }
    }
}
