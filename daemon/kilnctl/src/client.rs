//! Connecting to kilnd's Unix socket, and turning failures into one line
//! with a hint plus an exit code (2: daemon unreachable, 1: call refused).

use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

/// A failure to show the user: one message, one exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn unreachable(socket: &Path, why: impl std::fmt::Display) -> Self {
        Failure {
            message: format!(
                "cannot reach kilnd at {}: {why}\nhint: is kilnd running? start it with `systemctl start kilnd`, or point kilnctl at its socket with --socket or KILN_SOCKET",
                socket.display()
            ),
            code: 2,
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let code = s.code();
        let hint = match code {
            tonic::Code::PermissionDenied => "\nhint: run as root or as a member of group kiln",
            tonic::Code::Unavailable => {
                "\nhint: the daemon may be stopping or the component disabled; see `kilnctl status`"
            }
            _ => "",
        };
        Failure {
            message: format!("{}: {}{hint}", code_name(code), s.message()),
            code: 1,
        }
    }
}

fn code_name(c: tonic::Code) -> String {
    format!("{c:?}")
        .chars()
        .flat_map(|ch| {
            if ch.is_uppercase() {
                vec![' ', ch.to_ascii_lowercase()]
            } else {
                vec![ch]
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Open a channel to the socket, failing fast if nobody listens.
pub async fn connect(socket: &Path) -> Result<Channel, Failure> {
    std::fs::metadata(socket).map_err(|e| Failure::unreachable(socket, e))?;
    let path: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let endpoint =
        Endpoint::try_from("http://kilnd.invalid").map_err(|e| Failure::unreachable(socket, e))?;
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| {
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            Failure::unreachable(socket, detail)
        })
}
