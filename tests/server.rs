//! The server over a real TLS socket on 127.0.0.1, with a rustls client trusting the generated CA.

use rwop_test_support::{self as support, PATIENCE};
use support::fixtures::admission as fixture;
use support::http::{HttpResponse, http_get, read_response, send};
use support::server::{Fixture, ServeProcess, new_certs, options, serve_with, write_pair};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rwop_guard::admission::{Webhook, review};
use rwop_guard::certs::GeneratedCerts;
use rwop_guard::policy::{Facts, Policy};
use rwop_guard::server::{Limits, ReloadEvent, RunningServer, ServeOptions, start};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

async fn serve() -> Fixture {
    serve_with(Limits::default(), None).await
}

fn connector(roots: &[String]) -> TlsConnector {
    support::http::connector(roots, b"http/1.1")
}

/// An HTTP/1.1 connection over TLS.
async fn connect(addr: SocketAddr, roots: &[String]) -> TlsStream<TcpStream> {
    support::http::connect(addr, roots, b"http/1.1").await
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_der(certs: &GeneratedCerts) -> Vec<u8> {
    CertificateDer::from_pem_slice(certs.cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Waits (within `PATIENCE`) until `n` requests are in flight on the TLS port.
async fn wait_in_flight(server: &RunningServer, n: i64) {
    let gauge = &server.state.metrics.in_flight;
    tokio::time::timeout(PATIENCE, async {
        while gauge.get() < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} request(s) in flight"));
}

async fn post_review(stream: &mut TlsStream<TcpStream>, path: &str, body: &[u8]) -> HttpResponse {
    send(stream, "POST", path, Some("application/json"), body).await
}

async fn next_event(rx: &mut broadcast::Receiver<ReloadEvent>) -> ReloadEvent {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a reload event in time")
        .unwrap()
}

// ---- Answers ------------------------------------------------------------------------------

#[tokio::test]
async fn every_fixture_gets_the_same_answer_as_review() {
    let f = serve().await;
    let mut stream = connect(f.server.addr, &f.roots).await;
    let names = support::fixtures::admission_names();
    assert!(names.len() >= 40);
    for name in names {
        let body = fixture(&name);
        let (webhook, path) = if name.ends_with(".validate.json") {
            (Webhook::Validate, "/validate?timeout=5s")
        } else {
            (Webhook::Mutate, "/mutate?timeout=5s")
        };
        // Same keep-alive connection for all of them, as the API server does.
        let resp = post_review(&mut stream, path, &body).await;
        assert_eq!(resp.status, 200, "{name}");
        assert!(
            resp.headers
                .to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        let expected = review(webhook, &Policy::default(), &Facts::default(), &body).unwrap();
        assert_eq!(resp.body, expected.body, "{name}");
    }
}

#[tokio::test]
async fn http2_is_negotiated_and_answers() {
    let f = serve().await;
    // `connect` checks that the server chose h2 from the client's offer.
    let tls = support::http::connect(f.server.addr, &f.roots, b"h2").await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(connection);
    let body = fixture("05-pv-patch-rwo-to-rwop.pv.validate.json");
    let request = axum::http::Request::post("https://localhost/validate?timeout=5s")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(axum::body::Bytes::from(body.clone()), true)
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), axum::http::Version::HTTP_2);
    let mut received = response.into_body();
    let mut answer = Vec::new();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, received.data())
        .await
        .expect("the body in time")
    {
        let chunk = chunk.unwrap();
        let _ = received.flow_control().release_capacity(chunk.len());
        answer.extend_from_slice(&chunk);
    }
    let expected = review(
        Webhook::Validate,
        &Policy::default(),
        &Facts::default(),
        &body,
    )
    .unwrap();
    assert_eq!(answer, expected.body);
    driver.abort();
}

// ---- Bad input ----------------------------------------------------------------------------

#[tokio::test]
async fn bad_requests_get_clear_answers_and_do_not_disturb_others() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let f = serve_with(limits, None).await;
    let mut other = connect(f.server.addr, &f.roots).await;
    let good = fixture("06b-pv-patch-rwx-to-rwop.pv.validate.json");

    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/validate",
            Some("application/json"),
            b"not json".to_vec(),
            400,
            "body is not valid JSON",
        ),
        (
            "POST",
            "/validate",
            Some("application/json"),
            b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}".to_vec(),
            400,
            "expected apiVersion admission.k8s.io/v1",
        ),
        (
            "POST",
            "/mutate",
            Some("application/json"),
            b"[1,2]".to_vec(),
            400,
            "not an AdmissionReview",
        ),
        (
            "POST",
            "/validate",
            Some("application/json"),
            vec![b' '; 100 * 1024],
            413,
            "larger than the limit",
        ),
        (
            "POST",
            "/validate",
            Some("text/plain"),
            good.clone(),
            415,
            "Content-Type must be application/json",
        ),
        ("POST", "/validate", None, good.clone(), 415, "found none"),
        (
            "GET",
            "/validate",
            None,
            Vec::new(),
            405,
            "method not allowed",
        ),
        (
            "PUT",
            "/mutate",
            Some("application/json"),
            good.clone(),
            405,
            "method not allowed",
        ),
        (
            "POST",
            "/nope",
            Some("application/json"),
            good.clone(),
            404,
            "no such endpoint",
        ),
    ];
    for (method, path, ct, body, status, fragment) in cases {
        let mut s = connect(f.server.addr, &f.roots).await;
        let resp = send(&mut s, method, path, ct, &body).await;
        assert_eq!(resp.status, status, "{method} {path}: {resp:?}");
        let json = resp.json();
        assert_eq!(json["code"], status);
        let msg = json["error"].as_str().unwrap();
        assert!(msg.contains(fragment), "{method} {path}: {msg}");
        // Another client's connection is not disturbed.
        let ok = post_review(&mut other, "/validate", &good).await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.json()["response"]["allowed"], false);
    }
    let metrics =
        String::from_utf8(http_get(f.server.metrics_addr, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("rwop_guard_rejected_requests_total{webhook=\"validate\",code=\"413\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rwop_guard_rejected_requests_total{webhook=\"validate\",code=\"400\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_with_an_explanation() {
    let f = serve().await;
    let mut tcp = TcpStream::connect(f.server.addr).await.unwrap();
    tcp.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, read_response(&mut tcp))
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(resp.status, 400);
    assert!(String::from_utf8_lossy(&resp.body).contains("use https://"));
    // And the connection is closed.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let f = serve_with(limits, None).await;
    let mut s = connect(f.server.addr, &f.roots).await;
    s.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // Never finish the headers: the server must close the connection by itself.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "connection was not closed");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // A TCP client that never starts the TLS handshake is also dropped.
    let mut tcp = TcpStream::connect(f.server.addr).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "idle TCP connection was not closed");
}

#[tokio::test]
async fn slow_bodies_time_out_with_408() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let f = serve_with(limits, None).await;
    let mut s = connect(f.server.addr, &f.roots).await;
    s.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, read_response(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status, 408);
    assert!(
        resp.json()["error"]
            .as_str()
            .unwrap()
            .contains("not completed within 300 ms")
    );
}

/// The stock layers as the server stacks them, driven in process: a handler that holds the only
/// slot makes the next request wait for it, not fail. (A request still sending its body holds no
/// slot: tests/server_limits.rs.)
#[tokio::test]
async fn requests_beyond_the_concurrency_limit_wait_instead_of_failing() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let limits = Limits {
        max_concurrency: 1,
        request_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let state = Arc::new(rwop_guard::server::AppState::new(Policy::default()));
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(4);
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let router = axum::Router::new().route(
        "/hold",
        axum::routing::post({
            let release = release.clone();
            move || async move {
                let _ = entered_tx.send(()).await;
                let _ = release.acquire().await.map(|p| p.forget());
                "done"
            }
        }),
    );
    let app = rwop_guard::server::apply_layers(router, state.clone(), &limits);
    let request = || {
        Request::post("/hold")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let first = tokio::spawn(app.clone().oneshot(request()));
    tokio::time::timeout(PATIENCE, entered.recv())
        .await
        .expect("the first request reaches its handler");
    let second = tokio::spawn(app.clone().oneshot(request()));
    // Both are in the stack; the second waits for the slot the first holds.
    tokio::time::timeout(PATIENCE, async {
        while state.metrics.in_flight.get() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("two requests in flight");
    assert!(
        entered.try_recv().is_err(),
        "the second request ran beside the first"
    );
    assert!(!second.is_finished());
    release.add_permits(1);
    let first = tokio::time::timeout(PATIENCE, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.unwrap().status(), 200);
    tokio::time::timeout(PATIENCE, entered.recv())
        .await
        .expect("the second request runs once the slot is free");
    release.add_permits(1);
    let second = tokio::time::timeout(PATIENCE, second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.unwrap().status(), 200);
}

// ---- Reload -------------------------------------------------------------------------------

#[tokio::test]
async fn certificate_rotation_in_place_under_load() {
    let f = serve().await;
    let mut events = f.server.reload_events();
    let next = new_certs();
    let roots = vec![f.roots[0].clone(), next.ca_cert_pem.clone()];
    let body = fixture("05-pv-patch-rwo-to-rwop.pv.validate.json");

    // An old keep-alive connection, opened before the rotation.
    let mut old = connect(f.server.addr, &roots).await;
    let old_leaf = peer_leaf(&old);
    assert_eq!(post_review(&mut old, "/validate", &body).await.status, 200);

    // A stream of requests on fresh connections while the files are rewritten: each connection
    // reports the certificate it got and how its 5 requests went, until told to stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (report_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let addr = f.server.addr;
    let stream_roots = roots.clone();
    let stream_body = body.clone();
    let load = tokio::spawn(async move {
        while !*stop_rx.borrow() {
            let mut s = connect(addr, &stream_roots).await;
            let mut statuses = Vec::new();
            for _ in 0..5 {
                statuses.push(post_review(&mut s, "/validate", &stream_body).await.status);
            }
            if report_tx.send((peer_leaf(&s), statuses)).is_err() {
                return;
            }
        }
    });
    let mut next_report = async || {
        tokio::time::timeout(PATIENCE, reports.recv())
            .await
            .expect("the load goes on")
            .expect("the load task is alive")
    };
    let check = |(leaf, statuses): &(Vec<u8>, Vec<u16>)| {
        assert_eq!(statuses, &[200; 5], "a request failed during the rotation");
        leaf.clone()
    };

    // The load runs on the old certificate before the swap ...
    assert_eq!(check(&next_report().await), old_leaf);
    write_pair(f.dir.path(), &next);
    assert!(matches!(
        next_event(&mut events).await,
        ReloadEvent::TlsReloaded { .. }
    ));
    // ... and without a break across it, until its connections get the new one.
    let new_leaf = leaf_der(&next);
    let after_swap = tokio::time::timeout(PATIENCE, async {
        let mut old = 0;
        while check(&next_report().await) != new_leaf {
            old += 1;
        }
        old
    })
    .await
    .expect("new connections get the new certificate");
    stop_tx.send(true).unwrap();
    while let Some(report) = reports.recv().await {
        assert_eq!(
            check(&report),
            new_leaf,
            "an old certificate after the new one"
        );
    }
    load.await.unwrap();
    eprintln!("connections still on the old certificate after the reload event: {after_swap}");

    // New connections get the new certificate; the old connection keeps working.
    let fresh = connect(f.server.addr, &roots).await;
    assert_eq!(peer_leaf(&fresh), leaf_der(&next));
    assert_ne!(peer_leaf(&fresh), old_leaf);
    assert_eq!(post_review(&mut old, "/validate", &body).await.status, 200);

    let metrics =
        String::from_utf8(http_get(f.server.metrics_addr, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("rwop_guard_tls_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

/// Lays out a directory the way the kubelet writes a Secret volume.
fn kubelet_swap(dir: &Path, generation: &str, certs: &GeneratedCerts) {
    let data = dir.join(generation);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(data.join("tls.key"), &certs.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn secret_volume_symlink_swap_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let first = new_certs();
    kubelet_swap(dir.path(), "..2026_11_21_10_00_00.1", &first);
    let server = start(options(
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    ))
    .await
    .unwrap();
    let mut events = server.reload_events();
    let second = new_certs();
    let roots = vec![first.ca_cert_pem.clone(), second.ca_cert_pem.clone()];
    assert_eq!(
        peer_leaf(&connect(server.addr, &roots).await),
        leaf_der(&first)
    );

    kubelet_swap(dir.path(), "..2026_11_21_11_00_00.2", &second);
    std::fs::remove_dir_all(dir.path().join("..2026_11_21_10_00_00.1")).unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        ReloadEvent::TlsReloaded { .. }
    ));
    assert_eq!(
        peer_leaf(&connect(server.addr, &roots).await),
        leaf_der(&second)
    );
}

#[tokio::test]
async fn a_bad_new_pair_keeps_the_old_one_serving() {
    let f = serve().await;
    let mut events = f.server.reload_events();
    let original = CertificateDer::from_pem_slice(
        std::fs::read(f.dir.path().join("tls.crt"))
            .unwrap()
            .as_slice(),
    )
    .unwrap()
    .to_vec();
    // A key that does not belong to the certificate.
    std::fs::write(f.dir.path().join("tls.key"), new_certs().key_pem).unwrap();
    match next_event(&mut events).await {
        ReloadEvent::TlsFailed(msg) => assert!(msg.contains("do not form a pair"), "{msg}"),
        other => panic!("expected a failed reload, got {other:?}"),
    }
    let s = connect(f.server.addr, &f.roots).await;
    assert_eq!(peer_leaf(&s), original);
    // Garbage is refused the same way.
    std::fs::write(f.dir.path().join("tls.crt"), "garbage").unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        ReloadEvent::TlsFailed(_)
    ));
    assert_eq!(peer_leaf(&connect(f.server.addr, &f.roots).await), original);

    let metrics =
        String::from_utf8(http_get(f.server.metrics_addr, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("rwop_guard_tls_reloads_total{result=\"failed\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn policy_reload_and_a_bad_policy_keeps_the_old_one() {
    let f = serve_with(Limits::default(), Some("validation:\n  action: deny\n")).await;
    let mut events = f.server.reload_events();
    let mut s = connect(f.server.addr, &f.roots).await;
    let body = fixture("06b-pv-patch-rwx-to-rwop.pv.validate.json");
    assert_eq!(
        post_review(&mut s, "/validate", &body).await.json()["response"]["allowed"],
        false
    );

    std::fs::write(
        f.dir.path().join("policy.yaml"),
        "validation:\n  action: warn\n",
    )
    .unwrap();
    assert_eq!(next_event(&mut events).await, ReloadEvent::PolicyReloaded);
    let out = post_review(&mut s, "/validate", &body).await.json();
    assert_eq!(out["response"]["allowed"], true);
    assert!(
        out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("is not allowed")
    );

    std::fs::write(
        f.dir.path().join("policy.yaml"),
        "validation:\n  action: maybe\n",
    )
    .unwrap();
    match next_event(&mut events).await {
        ReloadEvent::PolicyFailed(msg) => assert!(msg.contains("validation.action"), "{msg}"),
        other => panic!("expected a failed policy reload, got {other:?}"),
    }
    assert_eq!(
        post_review(&mut s, "/validate", &body).await.json()["response"]["allowed"],
        true
    );
}

// ---- Metrics and probes --------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_what_was_sent() {
    let f = serve_with(
        Limits::default(),
        Some("mutation:\n  enabled: true\n  storageClasses: [fast-csi]\n"),
    )
    .await;
    let mut s = connect(f.server.addr, &f.roots).await;
    for _ in 0..3 {
        post_review(
            &mut s,
            "/validate",
            &fixture("06b-pv-patch-rwx-to-rwop.pv.validate.json"),
        )
        .await;
    }
    for _ in 0..2 {
        post_review(
            &mut s,
            "/mutate",
            &fixture("31-pvc-create-no-sc-default-class-filled.pvc.mutate.json"),
        )
        .await;
    }
    post_review(
        &mut s,
        "/validate",
        &fixture("01-pvc-create-rwo.pvc.validate.json"),
    )
    .await;
    let m = http_get(f.server.metrics_addr, "/metrics").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    for line in [
        "rwop_guard_requests_total{webhook=\"validate\",kind=\"PersistentVolume\",operation=\"UPDATE\",decision=\"denied\"} 3",
        "rwop_guard_requests_total{webhook=\"mutate\",kind=\"PersistentVolumeClaim\",operation=\"CREATE\",decision=\"mutated\"} 2",
        "rwop_guard_requests_total{webhook=\"validate\",kind=\"PersistentVolumeClaim\",operation=\"CREATE\",decision=\"allowed\"} 1",
        "rwop_guard_mutations_total 2",
        "rwop_guard_request_duration_seconds_count{webhook=\"validate\"} 4",
        "rwop_guard_request_duration_seconds_count{webhook=\"mutate\"} 2",
        "rwop_guard_ready 1",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    let not_after = text
        .lines()
        .find_map(|l| l.strip_prefix("rwop_guard_certificate_not_after_seconds "))
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((not_after - (now + 86_400)).abs() < 60, "{not_after}");

    for (addr, path) in [
        (f.server.metrics_addr, "/healthz"),
        (f.server.metrics_addr, "/readyz"),
    ] {
        assert_eq!(http_get(addr, path).await.status, 200);
    }
    let tls_ready = send(&mut s, "GET", "/readyz", None, b"").await;
    assert_eq!(tls_ready.status, 200);
    assert_eq!(send(&mut s, "GET", "/healthz", None, b"").await.status, 200);
}

#[tokio::test]
async fn shutdown_fails_readiness_and_drains_in_flight_requests() {
    let f = serve().await;
    let body = fixture("05-pv-patch-rwo-to-rwop.pv.validate.json");
    let mut in_flight = connect(f.server.addr, &f.roots).await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(&body[..100]).await.unwrap();
    in_flight.flush().await.unwrap();

    // Wait until the server is really handling it (reading its body).
    wait_in_flight(&f.server, 1).await;

    f.server.shutdown();
    assert_eq!(http_get(f.server.metrics_addr, "/readyz").await.status, 503);
    // No new connections once draining started: the listener closes, so a connection is
    // refused by the kernel. Until then (the accept loop sees the signal on its next turn) a
    // connection may still be accepted and answered; what ends the loop is a refusal only, not
    // a connection the server closes later (its header timeout closes any idle one).
    let mut served_while_draining = 0;
    let refused = tokio::time::timeout(PATIENCE, async {
        loop {
            let tcp = match TcpStream::connect(f.server.addr).await {
                Err(e) => return e,
                Ok(tcp) => tcp,
            };
            let handshake = connector(&f.roots)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await;
            if let Ok(mut tls) = handshake {
                let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
                let asked = tls.write_all(head).await.is_ok();
                let answer = tokio::time::timeout(PATIENCE, read_response(&mut tls)).await;
                if asked && matches!(answer, Ok(Some(_))) {
                    served_while_draining += 1;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("new connections still accepted while draining ({served_while_draining} served)")
    });
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );

    in_flight.write_all(&body[100..]).await.unwrap();
    let resp = tokio::time::timeout(PATIENCE, read_response(&mut in_flight))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status, 200);
    tokio::time::timeout(PATIENCE, f.server.wait())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_panic_layer_answers_500() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let state = Arc::new(rwop_guard::server::AppState::new(Policy::default()));
    let router = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            "unreachable"
        }),
    );
    let app = rwop_guard::server::apply_layers(router, state.clone(), &Limits::default());
    let resp = app
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["code"], 500);
    assert!(state.metrics.encode().contains("rwop_guard_panics_total 1"));
}

// ---- Startup errors -------------------------------------------------------------------------

#[tokio::test]
async fn unusable_startup_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let certs = new_certs();
    write_pair(dir.path(), &certs);
    let opts = |cert: &str, key: &str, config: Option<PathBuf>| ServeOptions {
        config,
        ..options(dir.path().join(cert), dir.path().join(key))
    };
    let err = start(opts("missing.crt", "tls.key", None))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("cannot read") && err.to_string().contains("missing.crt"),
        "{err}"
    );
    std::fs::write(dir.path().join("other.key"), new_certs().key_pem).unwrap();
    let err = start(opts("tls.crt", "other.key", None))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("do not form a pair"), "{err}");
    std::fs::write(dir.path().join("p.yaml"), "mutation: {enabled: perhaps}\n").unwrap();
    let err = start(opts("tls.crt", "tls.key", Some(dir.path().join("p.yaml"))))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("mutation.enabled"), "{err}");
}

// ---- The binary: SIGTERM with requests in flight ---------------------------------------------

#[tokio::test]
async fn sigterm_answers_every_in_flight_request_and_exits_0() {
    let server = ServeProcess::start(&["--log-format", "json"]).await;
    let (mut child, addr, metrics_addr, roots) =
        (server.child, server.addr, server.metrics_addr, server.roots);

    // Five requests in flight: headers and part of the body sent.
    let body = fixture("06b-pv-patch-rwx-to-rwop.pv.validate.json");
    let head = format!(
        "POST /validate?timeout=5s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = connect(addr, &roots).await;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body[..50]).await.unwrap();
        s.flush().await.unwrap();
        streams.push(s);
    }
    tokio::time::timeout(PATIENCE, async {
        loop {
            let m = String::from_utf8(http_get(metrics_addr, "/metrics").await.body).unwrap();
            if m.contains("rwop_guard_requests_in_flight 5") {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("five requests in flight");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // Readiness fails at once while the requests drain.
    tokio::time::timeout(PATIENCE, async {
        while http_get(metrics_addr, "/readyz").await.status != 503 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("readiness fails after SIGTERM");

    for s in &mut streams {
        s.write_all(&body[50..]).await.unwrap();
        let resp = tokio::time::timeout(PATIENCE, read_response(s))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["response"]["allowed"], false);
    }
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // Every review was logged, as one JSON line each, and written out before the exit.
    let log = std::fs::read_to_string(&server.log).unwrap();
    let reviews: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l| l["message"] == "review")
        .collect();
    assert_eq!(reviews.len(), 5, "{log}");
    for r in &reviews {
        assert_eq!(r["decision"], "denied", "{r}");
        assert_eq!(r["kind"], "PersistentVolume", "{r}");
        assert!(r["latency_us"].is_u64(), "{r}");
    }
}

// ---- certs: files a cluster install can use ---------------------------------------------------

#[tokio::test]
async fn certs_command_writes_a_pair_the_server_serves_for_the_service_name() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_arg = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "certs",
            "--service",
            "guard",
            "--namespace",
            "storage",
            "--out",
            out_arg,
        ];
        args.extend(extra);
        support::binary::run(&args, b"")
    };
    let first = run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    for (file, mode) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("tls.crt", 0o644),
        ("tls.key", 0o600),
    ] {
        let meta = std::fs::metadata(out.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    // Nothing is overwritten by accident.
    let again = run(&[]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(run(&["--force"]).code, 0);

    let server = start(options(out.join("tls.crt"), out.join("tls.key")))
        .await
        .unwrap();
    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    // The API server connects to the Service by its DNS name; the chain must verify for it.
    for name in ["guard.storage.svc", "guard.storage.svc.cluster.local"] {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let tls = connector(std::slice::from_ref(&ca))
            .connect(ServerName::try_from(name).unwrap(), tcp)
            .await;
        assert!(tls.is_ok(), "{name}: {:?}", tls.err());
    }
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let wrong = match connector(&[ca])
        .connect(ServerName::try_from("other.storage.svc").unwrap(), tcp)
        .await
    {
        Ok(_) => panic!("a certificate for another name is accepted"),
        Err(e) => e,
    };
    // Refused for its name, not for anything else (an unknown issuer, an expired certificate).
    let cause = wrong
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            cause,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{wrong:?}"
    );
}
