//! Logging with tracing: to the journal (structured fields kept) when stderr
//! is connected to it, readable text on stderr otherwise. The filter can be
//! swapped at run time, which is how a reload changes the log level.

use kiln_engine::LiveSettings;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LiveSettings for LogControl {
    fn set_log_level(&self, filter: &str) -> Result<(), String> {
        let f = EnvFilter::try_new(filter).map_err(|e| format!("bad filter {filter:?}: {e}"))?;
        self.handle.reload(f).map_err(|e| e.to_string())
    }
}

/// systemd sets JOURNAL_STREAM to the device:inode of the stream it gave us.
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Install the global subscriber. Call once.
pub fn init(filter: &str) -> LogControl {
    let initial = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter_layer, handle) = reload::Layer::new(initial);
    let journald = if stderr_is_journal() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let output: Box<dyn Layer<_> + Send + Sync> = match journald {
        Some(j) => Box::new(j.with_syslog_identifier("kilnd".into())),
        None => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(filter_layer)
        .with(output)
        .try_init();
    LogControl { handle }
}
