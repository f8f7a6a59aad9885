//! What a client can make the server hold, over real sockets on 127.0.0.1: connections (header
//! and idle timeouts on both ports, the connection limit), memory under stalled large bodies,
//! requests that never send their body beside real reviews, and log lines. HTTP/1.1 as raw
//! requests over tokio-rustls, HTTP/2 with the h2 crate's client.
//!
//! Timeouts are set short by the tests; a deadline of the timeout plus [`MARGIN`] is the only
//! timing asserted. Waits are on conditions (a metric, a socket's end) with [`PATIENCE`].

use rwop_test_support::{self as support, PATIENCE};
use support::fixtures::admission as fixture;
use support::http::{HttpResponse, connect, http_get, read_response, send};
use support::server::{ServeProcess, serve_with};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use rwop_guard::server::Limits;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Slack on "closed within its timeout", for a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);
/// The chart's memory limit.
const CHART_MEMORY_LIMIT: u64 = 64 * 1024 * 1024;

// ---- Clients ---------------------------------------------------------------------------------

const H1: &[u8] = b"http/1.1";
const H2: &[u8] = b"h2";

fn head(method: &str, path: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// A review-shaped HTTP/1.1 request (JSON content type) and its answer.
async fn h1_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    body: &[u8],
) -> HttpResponse {
    send(stream, method, path, Some("application/json"), body).await
}

/// Reads until the peer closes the connection (EOF or an error), within `deadline`.
/// True when it did.
async fn closed_by_peer<S: AsyncRead + Unpin>(stream: &mut S, deadline: Duration) -> bool {
    let mut sink = vec![0u8; 16384];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An HTTP/2 client connection, driven by a task of its own.
struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS as the client last saw it.
    max_streams: Arc<AtomicUsize>,
}

async fn h2_connect(addr: SocketAddr, roots: &[String]) -> H2Client {
    let tls = connect(addr, roots, H2).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    let max_streams = Arc::new(AtomicUsize::new(0));
    let seen = max_streams.clone();
    let mut conn = Box::pin(conn);
    let driver = tokio::spawn(std::future::poll_fn(move |cx| {
        let polled = conn.as_mut().poll(cx);
        seen.store(conn.max_concurrent_send_streams(), Ordering::SeqCst);
        polled
    }));
    H2Client {
        send,
        driver,
        max_streams,
    }
}

fn h2_request(path: &str, length: usize) -> Request<()> {
    Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .header("content-length", length)
        .body(())
        .unwrap()
}

/// Opens a stream with headers only: the body never comes. Kept open by what it returns.
async fn h2_open_bodyless(
    client: &H2Client,
    length: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut send = client.send.clone().ready().await.unwrap();
    send.send_request(h2_request("/validate", length), false)
        .unwrap()
}

async fn h2_review(client: &H2Client, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut send = client.send.clone().ready().await.unwrap();
    let (response, mut stream) = send
        .send_request(h2_request(path, body.len()), false)
        .unwrap();
    stream
        .send_data(Bytes::copy_from_slice(body), true)
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an answer in time")
        .unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, body.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, bytes)
}

// ---- Metrics ---------------------------------------------------------------------------------

async fn metrics_text(metrics_addr: SocketAddr) -> String {
    String::from_utf8(http_get(metrics_addr, "/metrics").await.body).unwrap()
}

/// The value of the series `series` (name and labels as exposed), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `check` holds for the exposed metrics; fails with them after [`PATIENCE`].
async fn wait_metrics(metrics_addr: SocketAddr, what: &str, check: impl Fn(&str) -> bool) {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let text = metrics_text(metrics_addr).await;
            if check(&text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if found.is_err() {
        panic!("{what}\n{}", metrics_text(metrics_addr).await);
    }
}

fn closed(listener: &str, reason: &str) -> String {
    format!("rwop_guard_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

/// Asserts how many connections the server closed, by (listener, reason).
async fn assert_closed(metrics_addr: SocketAddr, counts: &[(&str, &str, f64)]) {
    let text = metrics_text(metrics_addr).await;
    for &(listener, reason, n) in counts {
        assert_eq!(metric(&text, &closed(listener, reason)), n, "{text}");
    }
}

// ---- The binary ------------------------------------------------------------------------------

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---- 3. Connections are bounded --------------------------------------------------------------

#[tokio::test]
async fn connections_that_send_nothing_are_closed_within_the_header_timeout() {
    let header_timeout = Duration::from_millis(500);
    let f = serve_with(
        Limits {
            header_timeout,
            ..Limits::default()
        },
        None,
    )
    .await;
    // Handshake done, then nothing: neither over HTTP/1.1 nor HTTP/2.
    for alpn in [H1, H2] {
        let mut tls = connect(f.server.addr, &f.roots, alpn).await;
        assert!(
            closed_by_peer(&mut tls, header_timeout + MARGIN).await,
            "{} connection still open",
            String::from_utf8_lossy(alpn)
        );
    }
    // No handshake at all.
    let mut tcp = TcpStream::connect(f.server.addr).await.unwrap();
    assert!(closed_by_peer(&mut tcp, header_timeout + MARGIN).await);
    // Half a request head over HTTP/1.1.
    let mut tls = connect(f.server.addr, &f.roots, H1).await;
    tls.write_all(b"POST /validate HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    assert!(closed_by_peer(&mut tls, header_timeout + MARGIN).await);

    assert_closed(f.server.metrics_addr, &[("webhook", "header_timeout", 4.0)]).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_but_busy_ones_are_not() {
    let idle_timeout = Duration::from_millis(800);
    let f = serve_with(
        Limits {
            idle_timeout,
            request_timeout: Duration::from_secs(15),
            ..Limits::default()
        },
        None,
    )
    .await;
    let review = fixture("06b-pv-patch-rwx-to-rwop.pv.validate.json");

    // A request in progress past the idle timeout: its connection stays.
    let mut busy = connect(f.server.addr, &f.roots, H1).await;
    busy.write_all(head("POST", "/validate", review.len()).as_bytes())
        .await
        .unwrap();
    busy.write_all(&review[..100]).await.unwrap();

    // HTTP/1.1 keep-alive: answered, then closed once idle.
    let mut h1 = connect(f.server.addr, &f.roots, H1).await;
    let answer = h1_request(&mut h1, "POST", "/validate", &review).await;
    assert_eq!(answer.status, 200);
    assert!(closed_by_peer(&mut h1, idle_timeout + MARGIN).await);

    // HTTP/2: answered, then a GOAWAY ends the connection once idle.
    let h2 = h2_connect(f.server.addr, &f.roots).await;
    let (status, body) = h2_review(&h2, "/validate", &review).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    let ended = tokio::time::timeout(idle_timeout + MARGIN, h2.driver).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection is still open");

    // Longer than an idle timeout has passed since the busy request began: it still completes.
    busy.write_all(&review[100..]).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_response(&mut busy))
        .await
        .unwrap()
        .expect("the busy connection was cut");
    assert_eq!(answer.status, 200);

    assert_closed(f.server.metrics_addr, &[("webhook", "idle_timeout", 2.0)]).await;
}

#[tokio::test]
async fn the_metrics_port_has_header_and_idle_timeouts() {
    let (header_timeout, idle_timeout) = (Duration::from_millis(500), Duration::from_millis(700));
    let f = serve_with(
        Limits {
            header_timeout,
            idle_timeout,
            ..Limits::default()
        },
        None,
    )
    .await;
    let addr = f.server.metrics_addr;
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert!(closed_by_peer(&mut half, header_timeout + MARGIN).await);

    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_peer(&mut silent, header_timeout + MARGIN).await);

    let mut keep_alive = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        h1_request(&mut keep_alive, "GET", "/healthz", b"")
            .await
            .status,
        200
    );
    assert!(closed_by_peer(&mut keep_alive, idle_timeout + MARGIN).await);

    let counts = [
        ("metrics", "header_timeout", 2.0),
        ("metrics", "idle_timeout", 1.0),
    ];
    assert_closed(addr, &counts).await;
}

/// A flood of connections that send nothing fills the TLS port to its limit: the rest wait,
/// the limit is logged and counted, file descriptors stay bounded, and the probes on the
/// metrics port are answered throughout. Once the flood goes, reviews are answered again.
#[tokio::test]
async fn the_connection_limit_holds_a_flood_and_the_probes_still_answer() {
    let server = ServeProcess::start(&[
        "--max-connections",
        "4",
        "--header-timeout",
        "30s",
        "--log-format",
        "json",
    ])
    .await;
    let review = fixture("05-pv-patch-rwo-to-rwop.pv.validate.json");
    // Warm up (the first TLS connection loads what the process keeps), then count.
    let warm = server.answered(&review).await;
    drop(warm);
    wait_metrics(server.metrics_addr, "the warm-up connection closed", |m| {
        metric(m, "rwop_guard_connections_open{listener=\"webhook\"}") == 0.0
    })
    .await;
    let fds_before = server.open_fds();

    const FLOOD: usize = 40;
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.push(TcpStream::connect(server.addr).await.unwrap());
    }
    wait_metrics(server.metrics_addr, "the TLS port at its limit", |m| {
        metric(m, "rwop_guard_connections_open{listener=\"webhook\"}") == 4.0
            && metric(
                m,
                "rwop_guard_connections_limited_total{listener=\"webhook\"}",
            ) >= 1.0
    })
    .await;
    // 4 served, 1 accepted and waiting for a slot; the others are in the kernel's backlog.
    // (And up to 2 of the metrics connections this test opens, the server closing them.)
    let fds_flooded = server.open_fds();
    assert!(
        fds_flooded <= fds_before + 4 + 1 + 2,
        "{fds_before} fds before the flood, {fds_flooded} during"
    );
    for _ in 0..20 {
        assert_eq!(http_get(server.metrics_addr, "/healthz").await.status, 200);
        assert_eq!(http_get(server.metrics_addr, "/readyz").await.status, 200);
    }
    let log = server
        .wait_log("saying the limit was reached", |l| {
            l.contains("connection limit reached") && l.contains(r#""listener":"webhook""#)
        })
        .await;
    assert_eq!(
        log.matches("connection limit reached").count(),
        1,
        "one line per episode:\n{log}"
    );
    eprintln!(
        "flood of {FLOOD} connections, limit 4: {fds_before} fds before, {fds_flooded} during, \
         RSS {:.1} MiB",
        mib(server.memory("VmRSS"))
    );

    drop(flood);
    let mut after = tokio::time::timeout(PATIENCE, connect(server.addr, &server.roots, H1))
        .await
        .expect("a connection once the flood is gone");
    let answer = h1_request(&mut after, "POST", "/validate", &review).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["response"]["allowed"], true);
    server
        .wait_log("saying the limit is no longer reached", |l| {
            l.contains("below the connection limit again")
        })
        .await;
}

// ---- 4. Memory stays under the chart's limit -------------------------------------------------

/// Sends a request head with `Content-Length: length` and `length - short` bytes of body, then
/// stalls (on HTTP/1.1). The task ends when aborted or when the server closes.
async fn stall_h1(addr: SocketAddr, roots: Vec<String>, length: usize, short: usize) {
    let mut tls = connect(addr, &roots, H1).await;
    if tls
        .write_all(head("POST", "/validate", length).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut left = length - short;
    while left > 0 {
        let n = left.min(chunk.len());
        if tls.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        left -= n;
    }
    // Keep the connection until the server answers (408, 503) or closes it.
    let _ = read_response(&mut tls).await;
}

const REFUSED: &str = "rwop_guard_rejected_requests_total{webhook=\"validate\",code=\"503\"}";

/// 80 requests declaring the largest body and sending all of it but a few bytes, then stalling,
/// over HTTP/1.1 and HTTP/2, twice: the server's peak RSS stays under the chart's memory limit,
/// and under what its budget allows; requests beyond the budget get 503.
#[tokio::test]
async fn memory_stays_bounded_under_stalled_large_bodies() {
    let server = ServeProcess::start(&["--request-timeout", "6s"]).await;
    let limits = Limits::default();
    let length = limits.max_body_bytes;
    let review = fixture("05-pv-patch-rwo-to-rwop.pv.validate.json");
    let mut warm = server.answered(&review).await;
    let idle_rss = server.memory("VmRSS");

    for wave in 1..=2 {
        let mut clients = JoinSet::new();
        for _ in 0..40 {
            clients.spawn(stall_h1(server.addr, server.roots.clone(), length, 16));
        }
        let mut h2s = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..4 {
            let client = h2_connect(server.addr, &server.roots).await;
            for _ in 0..10 {
                let (response, mut stream) = h2_open_bodyless(&client, length).await;
                stream
                    .send_data(Bytes::from(vec![b' '; length - 16]), false)
                    .unwrap();
                streams.push((response, stream));
            }
            h2s.push(client);
        }
        // Every request has sent its first bytes: as many as the budget holds have a share and
        // read on, the others were refused.
        let shares = limits.max_buffered_bytes / length;
        let refused = (80 - shares) * wave;
        wait_metrics(server.metrics_addr, "the budget spent", |m| {
            metric(m, "rwop_guard_buffered_body_bytes") as usize == shares * length
                && metric(m, REFUSED) as usize == refused
        })
        .await;
        let text = metrics_text(server.metrics_addr).await;
        let (rss, peak) = (server.memory("VmRSS"), server.memory("VmHWM"));
        eprintln!(
            "wave {wave}: 80 stalled bodies of {length} bytes: RSS {:.1} MiB (idle {:.1} MiB), \
             peak {:.1} MiB, buffered {} bytes, 503 so far {}, fds {}",
            mib(rss),
            mib(idle_rss),
            mib(peak),
            metric(&text, "rwop_guard_buffered_body_bytes"),
            metric(&text, REFUSED),
            server.open_fds()
        );
        assert!(
            peak < CHART_MEMORY_LIMIT,
            "peak RSS {:.1} MiB over the chart's 64 MiB",
            mib(peak)
        );
        // The budget and one transport window per connection, over what the idle server uses.
        let allowed = idle_rss + limits.max_buffered_bytes as u64 + 16 * 1024 * 1024;
        assert!(
            peak < allowed,
            "peak RSS {:.1} MiB over {:.1} MiB",
            mib(peak),
            mib(allowed)
        );
        // The stalled requests end with their timeout; then the next wave.
        wait_metrics(
            server.metrics_addr,
            "every stalled request timed out",
            |m| {
                metric(m, "rwop_guard_requests_in_flight") == 0.0
                    && metric(m, "rwop_guard_buffered_body_bytes") == 0.0
            },
        )
        .await;
        clients.abort_all();
        drop((streams, h2s));
    }
    // And a review is still answered.
    assert_eq!(
        h1_request(&mut warm, "POST", "/validate", &review)
            .await
            .status,
        200
    );
}

/// What the default connection limits let clients hold, all at once: every connection of the
/// TLS port an HTTP/2 connection with all its streams open and waiting for a body, and the
/// metrics port full but for one connection. The peak RSS stays under the chart's memory limit with room for the body
/// budget.
#[tokio::test]
async fn the_default_connection_limits_fit_the_memory_limit() {
    let server =
        ServeProcess::start(&["--request-timeout", "60s", "--header-timeout", "60s"]).await;
    let limits = Limits::default();
    let streams = rwop_guard::server::H2_MAX_STREAMS as usize;
    let idle_rss = server.memory("VmRSS");
    let mut metrics_held = Vec::new();
    // All but one, which the test reads the metrics through.
    for _ in 1..limits.metrics_max_connections {
        let mut tcp = TcpStream::connect(server.metrics_addr).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHo").await.unwrap();
        metrics_held.push(tcp);
    }
    let mut clients = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..limits.max_connections {
        let client = h2_connect(server.addr, &server.roots).await;
        for _ in 0..streams {
            pending.push(h2_open_bodyless(&client, 4096).await);
        }
        clients.push(client);
    }
    let waiting = limits.max_connections * streams;
    wait_metrics(server.metrics_addr, "every stream open", |m| {
        metric(m, "rwop_guard_requests_in_flight") as usize == waiting
    })
    .await;
    let peak = server.memory("VmHWM");
    let held = server.memory("VmRSS").saturating_sub(idle_rss);
    eprintln!(
        "{} HTTP/2 connections x {streams} body-less streams + {} metrics connections: RSS {:.1} MiB \
         (idle {:.1} MiB, {:.1} KiB per stream), peak {:.1} MiB, fds {}",
        limits.max_connections,
        limits.metrics_max_connections,
        mib(server.memory("VmRSS")),
        mib(idle_rss),
        held as f64 / waiting as f64 / 1024.0,
        mib(peak),
        server.open_fds()
    );
    assert!(
        peak + (limits.max_buffered_bytes as u64) < CHART_MEMORY_LIMIT,
        "peak RSS {:.1} MiB leaves no room for the body budget under 64 MiB",
        mib(peak)
    );
    drop((pending, clients, metrics_held));
}

// ---- 5. Requests without their body hold no slot --------------------------------------------

/// HTTP/2 streams and HTTP/1.1 requests that send headers and never their body, many more than
/// there are concurrency slots: a real review on another connection is answered while they
/// wait, over both protocols. Each HTTP/2 connection offers a bounded number of streams.
#[tokio::test]
async fn requests_without_their_body_do_not_starve_real_reviews() {
    let f = serve_with(
        Limits {
            max_concurrency: 4,
            request_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
        None,
    )
    .await;
    let review = fixture("06b-pv-patch-rwx-to-rwop.pv.validate.json");

    let streams = rwop_guard::server::H2_MAX_STREAMS as usize;
    let mut clients = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..6 {
        let client = h2_connect(f.server.addr, &f.roots).await;
        for _ in 0..streams {
            pending.push(h2_open_bodyless(&client, review.len()).await);
        }
        clients.push(client);
    }
    let mut h1_waiting = Vec::new();
    for _ in 0..8 {
        let mut tls = connect(f.server.addr, &f.roots, H1).await;
        tls.write_all(head("POST", "/validate", review.len()).as_bytes())
            .await
            .unwrap();
        h1_waiting.push(tls);
    }
    let waiting = (6 * streams + 8) as i64;
    let gauge = &f.server.state.metrics.in_flight;
    tokio::time::timeout(PATIENCE, async {
        while gauge.get() < waiting {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {waiting} requests in flight", gauge.get()));
    for client in &clients {
        assert_eq!(client.max_streams.load(Ordering::SeqCst), streams);
    }

    let mut h1 = connect(f.server.addr, &f.roots, H1).await;
    let answer = h1_request(&mut h1, "POST", "/validate", &review).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["response"]["allowed"], false);
    let h2 = h2_connect(f.server.addr, &f.roots).await;
    let (status, body) = h2_review(&h2, "/validate", &review).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The body-less requests were still waiting all along.
    assert!(gauge.get() >= waiting, "{}", gauge.get());
    drop((pending, h1_waiting, clients));
}

// ---- 6. Logs are bounded and cannot be forged ------------------------------------------------

/// The denied PV update, with a 3 MiB uid, a long name and a user that hold a line break and an
/// ANSI escape.
fn hostile_review() -> (Vec<u8>, String) {
    let mut review: Value =
        serde_json::from_slice(&fixture("06b-pv-patch-rwx-to-rwop.pv.validate.json")).unwrap();
    let uid = format!("u\nINFO forged: uid {}", "x".repeat(3 * 1024 * 1024));
    let name = format!("pv\n\x1b[31mINFO forged: name{}", "n".repeat(100_000));
    let request = &mut review["request"];
    request["uid"] = Value::from(uid.clone());
    request["name"] = Value::from(name.clone());
    request["object"]["metadata"]["name"] = Value::from(name.clone());
    request["oldObject"]["metadata"]["name"] = Value::from(name);
    request["userInfo"]["username"] = Value::from("admin\r\nINFO forged: user");
    (serde_json::to_vec(&review).unwrap(), uid)
}

/// The longest line a review can log: its bounded fields and messages, and the rest.
const MAX_LOG_LINE: usize = 16 * 1024;

#[tokio::test]
async fn log_lines_are_bounded_and_escaped_and_answers_name_objects_briefly() {
    let (body, uid) = hostile_review();
    for format in ["text", "json"] {
        let server = ServeProcess::start(&["--log-format", format]).await;
        let mut tls = connect(server.addr, &server.roots, H1).await;
        let answer = h1_request(&mut tls, "POST", "/validate", &body).await;
        assert_eq!(answer.status, 200);
        let json = answer.json();
        let response = &json["response"];
        // The API server matches the answer by uid: it is echoed whole.
        assert_eq!(response["uid"], Value::from(uid.clone()));
        assert_eq!(response["allowed"], false);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.len() < 2048 + 64, "{} bytes", message.len());
        assert!(message.contains("…[truncated, "), "{message:.300}");
        assert!(message.contains("is not allowed"), "{message:.300}");
        for (key, value) in response["auditAnnotations"].as_object().unwrap() {
            let value = value.as_str().unwrap();
            assert!(value.len() < 2048 + 64, "{key}: {} bytes", value.len());
        }
        // An unusable review that quotes a megabyte back: the 400 is short too.
        let junk = format!(
            r#"{{"apiVersion":"{}","kind":"AdmissionReview"}}"#,
            "v".repeat(1 << 20)
        );
        let bad = h1_request(&mut tls, "POST", "/validate", junk.as_bytes()).await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.len() < 4096, "{} bytes", bad.body.len());

        server
            .wait_log("for the review", |l| l.contains("denied"))
            .await;
        let log = server
            .wait_log("for the unusable review", |l| {
                l.contains("unusable AdmissionReview")
            })
            .await;
        for line in log.lines() {
            assert!(
                line.len() <= MAX_LOG_LINE,
                "{format}: a line of {} bytes",
                line.len()
            );
            assert!(
                !line.starts_with("INFO forged"),
                "{format}: forged line {line:.200}"
            );
            assert!(
                !line.contains('\x1b'),
                "{format}: raw escape in {line:.200}"
            );
            assert!(
                !line.contains('\r'),
                "{format}: raw carriage return in {line:.200}"
            );
        }
        let review_line = log.lines().find(|l| l.contains("denied")).unwrap();
        assert!(review_line.contains("…[truncated, "), "{review_line:.400}");
        if format == "json" {
            let line: Value = serde_json::from_str(review_line).unwrap();
            let logged_uid = line["uid"].as_str().unwrap();
            assert!(
                logged_uid.starts_with("u\nINFO forged: uid xxx"),
                "{logged_uid:.100}"
            );
            assert!(logged_uid.len() < 256 + 64, "{} bytes", logged_uid.len());
            assert_eq!(line["user"], "admin\r\nINFO forged: user");
        } else {
            assert!(
                review_line.contains(r"u\nINFO forged: uid xxx"),
                "{review_line:.400}"
            );
            assert!(
                review_line.contains(r"admin\r\nINFO forged: user"),
                "{review_line:.600}"
            );
        }
        eprintln!(
            "{format}: review line {} bytes for a {}-byte body",
            review_line.len(),
            body.len()
        );
    }
}
