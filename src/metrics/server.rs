//! The metrics endpoint: `GET /metrics` on `engine.metrics_addr`, answered by one
//! plain thread of its own (not a shard's executor), one connection at a time.
//!
//! It speaks just enough HTTP/1.x for Prometheus and curl: it reads the request head
//! (at most [`MAX_REQUEST_BYTES`], within [`IO_TIMEOUT`]), answers `GET /metrics`
//! with the page of `metrics/exposition.rs`, `GET /` with a pointer to it, anything
//! else with 404 or 405, and closes the connection. A client that is slow, silent or
//! malformed costs this thread at most the timeout and never a shard anything: the
//! shards only publish into `metrics/live.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::exposition;
use crate::metrics::live::Live;

/// The longest a request head may be.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// How long a client may take to send its request or read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("engine.metrics_addr {addr}: cannot listen there ({source}): choose a free port, or leave engine.metrics_addr out to turn the endpoint off")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Listens on `addr` and serves `live` from a thread named `weft-metrics` until the
/// process exits. Returns the address bound (the port, when `addr` asked for port 0).
pub fn start(addr: SocketAddr, live: Arc<Live>) -> Result<SocketAddr, BindError> {
    let listener = TcpListener::bind(addr).map_err(|source| BindError { addr, source })?;
    let bound = listener.local_addr().map_err(|source| BindError { addr, source })?;
    std::thread::Builder::new()
        .name("weft-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &live) {
                            tracing::debug!(error = %e, "metrics endpoint: a request was not answered");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: accepting a connection failed; still listening");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|source| BindError { addr, source })?;
    Ok(bound)
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, live: &Live) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too long\n",
            );
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = exposition::render(live, unix_s(), crate::sys::resident_file_bytes());
            respond(&mut stream, "200 OK", exposition::CONTENT_TYPE, &body)
        }
        ("GET", "/") => respond(&mut stream, "200 OK", "text/plain", "weft: metrics at /metrics\n"),
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "not found: try /metrics\n"),
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn unix_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
