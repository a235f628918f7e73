//! The core every hub shares, and nothing more: the effective configuration, the UMA
//! budget ledger, the state database, the event bus, component health, thread placement,
//! metrics, and the one authorise → act → audit path. It depends on no hub; hubs get an
//! `Arc<Core>` and the lower hubs or ports they need, explicitly.

use crate::auth::{Action, Authority, Caller, Transport};
use crate::budget::Ledger;
use crate::config::{Config, ConfigSources, LoadedConfig};
use crate::error::EngineError;
use crate::events::{EventBus, Subscription};
use crate::metrics::Metrics;
use crate::state::{AuditRow, StateDb};
use crate::threads::ThreadPlacement;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Instant, SystemTime};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    Starting,
    Running,
    Reloading,
    Stopping,
}

impl DaemonState {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Starting => "starting",
            DaemonState::Running => "running",
            DaemonState::Reloading => "reloading",
            DaemonState::Stopping => "stopping",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentState {
    Ok,
    Degraded,
    Disabled,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Ok => "ok",
            ComponentState::Degraded => "degraded",
            ComponentState::Disabled => "disabled",
        }
    }
}

/// One part of the daemon and, when it is not ok, what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    pub name: String,
    pub state: ComponentState,
    pub detail: String,
}

/// Settings the running process can change without a restart.
pub trait LiveSettings: Send + Sync {
    fn set_log_level(&self, filter: &str) -> Result<(), String>;
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub struct Core {
    pub(crate) budget: Ledger,
    /// Device, job and import events for every transport.
    pub(crate) events: EventBus,
    pub(crate) sources: ConfigSources,
    pub(crate) current: RwLock<LoadedConfig>,
    pub(crate) restart_required: RwLock<Vec<String>>,
    pub(crate) state: watch::Sender<DaemonState>,
    pub(crate) started_at: SystemTime,
    pub(crate) started: Instant,
    pub(crate) db: StateDb,
    pub(crate) authority: Box<dyn Authority>,
    pub(crate) live: Box<dyn LiveSettings>,
    pub(crate) metrics: Metrics,
    pub(crate) components: RwLock<BTreeMap<String, Component>>,
    pub(crate) threads: ThreadPlacement,
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    /// Which CPUs background and compute threads run on.
    pub fn threads(&self) -> &ThreadPlacement {
        &self.threads
    }

    /// The UMA budget ledger shared by models, jobs, batches and collections.
    pub fn budget(&self) -> &Ledger {
        &self.budget
    }

    pub fn config(&self) -> Config {
        read(&self.current).config.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn db(&self) -> &StateDb {
        &self.db
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Every device, job and import event from now on.
    pub fn subscribe(&self) -> Subscription {
        self.events.subscribe()
    }

    pub fn state(&self) -> DaemonState {
        *self.state.borrow()
    }

    pub fn set_state(&self, s: DaemonState) {
        self.state.send_replace(s);
    }

    pub fn started_at(&self) -> String {
        rfc3339(self.started_at)
    }

    pub fn set_component(&self, name: &str, state: ComponentState, detail: impl Into<String>) {
        let c = Component {
            name: name.into(),
            state,
            detail: detail.into(),
        };
        write(&self.components).insert(name.into(), c);
    }

    /// One component's state, if it reported any.
    pub fn component(&self, name: &str) -> Option<Component> {
        read(&self.components).get(name).cloned()
    }

    /// May `caller` read job details, vector contents and search results? Reads are not
    /// audited; a refusal names the action and the fix like any other.
    pub(crate) async fn may_read(&self, caller: &Caller) -> Result<(), EngineError> {
        self.authorize(caller, Action::ReadData).await
    }

    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        action: Action,
    ) -> Result<(), EngineError> {
        if caller.transport == Transport::Internal {
            return Ok(());
        }
        self.authority.authorize(caller, action).await
    }

    /// The one path of every state-changing call: authorise `caller` for `action`, run `act`
    /// only when allowed, and audit the outcome as `name` with `args` and, on success,
    /// `detail` of the result.
    pub(crate) async fn authorised<T, Fut>(
        &self,
        caller: &Caller,
        action: Action,
        name: &str,
        args: &str,
        act: impl FnOnce() -> Fut,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, EngineError>
    where
        Fut: std::future::Future<Output = Result<T, EngineError>>,
    {
        let result = match self.authorize(caller, action).await {
            Ok(()) => act().await,
            Err(e) => Err(e),
        };
        let detail = result.as_ref().map(detail).unwrap_or_default();
        self.audit(caller, name, args, &result, &detail);
        result
    }

    /// Write one audit row. A failing audit write is logged, never fatal.
    pub fn audit<T>(
        &self,
        caller: &Caller,
        action: &str,
        args: &str,
        result: &Result<T, EngineError>,
        detail: &str,
    ) {
        let (res, detail) = match result {
            Ok(_) => ("ok".to_string(), detail.to_string()),
            Err(e) => (e.kind.name().to_string(), e.message.clone()),
        };
        let row = AuditRow {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            transport: caller.transport.name().into(),
            caller_uid: caller.uid,
            caller_gid: caller.gid,
            caller_pid: caller.pid,
            caller_name: caller.bus_name.clone(),
            action: action.into(),
            args: args.into(),
            result: res,
            detail,
        };
        if let Err(e) = self.db.insert_audit(&row) {
            tracing::error!(error = %e, action, "audit write failed");
        }
    }

    /// Delete history older than `[daemon] history_days` now and then daily. Call once,
    /// inside the runtime.
    pub fn start_history_retention(self: &std::sync::Arc<Core>) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HISTORY_PRUNE_EVERY);
            loop {
                tick.tick().await;
                let Some(core) = weak.upgrade() else { return };
                let days = core.config().daemon.history_days;
                if days == 0 {
                    continue;
                }
                let cutoff =
                    SystemTime::now() - std::time::Duration::from_secs(u64::from(days) * 86_400);
                match core.db().prune_history(&rfc3339(cutoff)) {
                    Ok((0, 0)) => {}
                    Ok((audit, jobs)) => tracing::info!(
                        audit,
                        jobs,
                        days,
                        "deleted history older than [daemon] history_days"
                    ),
                    Err(e) => tracing::warn!(error = %e, "history retention failed"),
                }
            }
        });
    }
}

/// How often history older than `[daemon] history_days` is deleted (also once at start).
const HISTORY_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(86_400);
