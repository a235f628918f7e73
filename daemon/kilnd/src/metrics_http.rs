//! The optional Prometheus listener: `GET /metrics` over a loopback TCP port
//! or a Unix socket, HTTP/1.0-style (one request per connection). Renders the
//! engine's metrics; holds no state of its own.

use kiln_engine::Engine;
use kiln_engine::config::MetricsListen;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, engine: Engine) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while n < buf.len() {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                || buf[..n].windows(2).any(|w| w == b"\n\n")
            {
                break;
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) =
        if method == "GET" && (target == "/metrics" || target.starts_with("/metrics?")) {
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                engine.metrics().render(),
            )
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "only GET /metrics is served here\n".to_string(),
            )
        };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Serve until `stop` turns true. Returns a description of where, or an error.
pub async fn serve(
    listen: MetricsListen,
    engine: Engine,
    mut stop: watch::Receiver<bool>,
) -> Result<String, String> {
    match listen {
        MetricsListen::Off => Ok("off".into()),
        MetricsListen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        Ok((s, _)) = l.accept() => { tokio::spawn(answer(s, engine.clone())); }
                    }
                }
            });
            Ok(format!("http://{addr}/metrics"))
        }
        MetricsListen::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let l = tokio::net::UnixListener::bind(&path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            let shown = format!("unix:{}", path.display());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        Ok((s, _)) = l.accept() => { tokio::spawn(answer(s, engine.clone())); }
                    }
                }
                let _ = std::fs::remove_file(&path);
            });
            Ok(shown)
        }
    }
}
