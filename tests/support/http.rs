//! One HTTP/1.1 response read off a raw stream, for the server tests that speak HTTP by hand.
//! Included by path (`#[path = "support/http.rs"]`).

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

// Not every test crate that includes this reads every field.
#[allow(dead_code)]
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response with a Content-Length body; None if the stream ends first.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Option<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let headers = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status = headers.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(HttpResponse {
        status,
        headers,
        body: buf[header_end..header_end + length].to_vec(),
    })
}
