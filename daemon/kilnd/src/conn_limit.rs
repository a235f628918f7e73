//! Connections per uid on the gRPC socket: each accepted connection is counted against its
//! peer's uid (SO_PEERCRED) until it closes. Past `daemon.max_connections_per_uid` a
//! connection is still accepted, but every call on it is refused with RESOURCE_EXHAUSTED
//! naming the limit (see `grpc::CallService`); past twice the limit it is closed at once, so
//! one local user cannot hold unbounded connection state. Each connection also keeps a
//! pidfd of the process that made it (SO_PEERPIDFD, else pidfd_open of SO_PEERCRED's pid):
//! once that process has exited, the connection's calls carry no credentials (`caller_of`)
//! instead of a pid the kernel may have handed to someone else. Touches only the connections.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use kiln_engine::process::{pidfd_exited, pidfd_open};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// Open connections per uid.
#[derive(Clone, Default)]
pub struct ConnLimits {
    open: Arc<Mutex<HashMap<u32, u32>>>,
    limit: u32,
}

/// What a call sees of its connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub uds: UdsConnectInfo,
    /// `Some((uid, open, limit))` when the connection is beyond its uid's limit.
    pub over: Option<(u32, u32, u32)>,
    /// The process that made the connection, while the kernel can name it.
    pub peer: Option<Arc<OwnedFd>>,
}

impl ConnInfo {
    /// `Some(pid)` when the process that made the connection has exited.
    pub fn maker_gone(&self) -> Option<i32> {
        let fd = self.peer.as_ref()?;
        pidfd_exited(fd).then(|| self.uds.peer_cred.and_then(|c| c.pid()).unwrap_or(0))
    }
}

/// SO_PEERPIDFD (Linux 6.5): a pidfd of the peer that connected.
const SO_PEERPIDFD: libc::c_int = 77;

/// A pidfd of the process that made `stream`.
fn peer_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `fd`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            &mut fd as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 && fd >= 0 {
        // SAFETY: the kernel handed us a new fd.
        return Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let pid = stream.peer_cred().ok()?.pid()?;
    pidfd_open(pid)
}

/// A counted connection; the count drops with it.
pub struct Limited {
    inner: UnixStream,
    uid: Option<u32>,
    over: Option<(u32, u32, u32)>,
    peer: Option<Arc<OwnedFd>>,
    limits: ConnLimits,
}

impl ConnLimits {
    pub fn new(limit: u32) -> ConnLimits {
        ConnLimits {
            open: Arc::default(),
            limit,
        }
    }

    /// Count `stream` against its uid; `None` when it is past twice the limit (closed).
    pub fn admit(&self, stream: UnixStream) -> Option<Limited> {
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let mut over = None;
        if let Some(uid) = uid {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(uid).or_default();
            if *n >= self.limit.saturating_mul(2) {
                tracing::warn!(
                    uid,
                    open = *n,
                    limit = self.limit,
                    "connection closed: the uid holds twice `daemon.max_connections_per_uid`"
                );
                return None;
            }
            *n += 1;
            if *n > self.limit {
                over = Some((uid, *n, self.limit));
            }
        }
        let peer = peer_pidfd(&stream).map(Arc::new);
        Some(Limited {
            inner: stream,
            uid,
            over,
            peer,
            limits: self.clone(),
        })
    }

    /// Connections `uid` holds now.
    pub fn open(&self, uid: u32) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if let Some(uid) = self.uid {
            let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&uid);
                }
            }
        }
    }
}

/// The refusal a call on an over-limit connection gets.
pub fn refusal(uid: u32, open: u32, limit: u32) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "uid {uid} has {open} connections to kilnd open, more than `daemon.max_connections_per_uid` \
         ({limit}); close some (reuse one channel per process) or raise the limit"
    ))
}

impl Connected for Limited {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            uds: self.inner.connect_info(),
            over: self.over,
            peer: self.peer.clone(),
        }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_count_per_uid_and_return_when_closed() {
        let limits = ConnLimits::new(2);
        let me = nix::unistd::geteuid().as_raw();
        let pair = || UnixStream::pair().unwrap().0;
        let a = limits.admit(pair()).unwrap();
        let b = limits.admit(pair()).unwrap();
        assert!(a.over.is_none() && b.over.is_none());
        let c = limits.admit(pair()).unwrap();
        assert_eq!(c.over, Some((me, 3, 2)), "the third is over the limit");
        let d = limits.admit(pair()).unwrap();
        assert!(d.over.is_some());
        assert!(
            limits.admit(pair()).is_none(),
            "past twice the limit: closed"
        );
        assert_eq!(limits.open(me), 4);
        drop((a, b, c, d));
        assert_eq!(limits.open(me), 0, "closing returns every slot");
        assert!(limits.admit(pair()).unwrap().over.is_none());
        let msg = refusal(me, 3, 2).message().to_string();
        assert!(
            limits.admit(pair()).unwrap().peer.is_some(),
            "a pidfd of the maker"
        );
        assert!(
            msg.contains("daemon.max_connections_per_uid") && msg.contains("(2)"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_connection_whose_maker_exited_says_so() {
        // The peer of a socketpair half is this process: alive.
        let (a, _b) = UnixStream::pair().unwrap();
        let limits = ConnLimits::new(4);
        let info = limits.admit(a).unwrap().connect_info();
        assert_eq!(info.maker_gone(), None);
        // A pidfd of a process that has ended.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        child.wait().unwrap();
        let gone = ConnInfo {
            peer: Some(Arc::new(fd)),
            ..info
        };
        assert!(gone.maker_gone().is_some());
    }
}
