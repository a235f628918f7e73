//! D-Bus adapter: `org.kiln.Kiln1` with `/org/kiln/Kiln1` implementing
//! `org.kiln.Kiln1.Manager`. Properties read the engine; methods build a
//! `Caller` from the sender's bus credentials and call the engine, which
//! authorises. State changes are published as PropertiesChanged.

use kiln_engine::auth::Transport;
use kiln_engine::config::BusChoice;
use kiln_engine::{Caller, Engine, EngineError, ErrorKind};
use std::time::Instant;
use zbus::ObjectPath;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

pub const BUS_NAME: &str = "org.kiln.Kiln1";
pub const MANAGER_PATH: &str = "/org/kiln/Kiln1";

/// Errors as `org.kiln.Kiln1.Error.<Kind>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.kiln.Kiln1.Error")]
pub enum KilnError {
    #[zbus(error)]
    ZBus(zbus::Error),
    InvalidArgument(String),
    NotFound(String),
    AlreadyExists(String),
    PermissionDenied(String),
    ResourceExhausted(String),
    FailedPrecondition(String),
    Unavailable(String),
    Internal(String),
}

impl From<EngineError> for KilnError {
    fn from(e: EngineError) -> Self {
        let m = e.message;
        match e.kind {
            ErrorKind::InvalidArgument => KilnError::InvalidArgument(m),
            ErrorKind::NotFound => KilnError::NotFound(m),
            ErrorKind::AlreadyExists => KilnError::AlreadyExists(m),
            ErrorKind::PermissionDenied => KilnError::PermissionDenied(m),
            ErrorKind::ResourceExhausted => KilnError::ResourceExhausted(m),
            ErrorKind::FailedPrecondition => KilnError::FailedPrecondition(m),
            ErrorKind::Unavailable => KilnError::Unavailable(m),
            ErrorKind::Internal => KilnError::Internal(m),
        }
    }
}

/// The caller of a method call, from the bus daemon's view of the sender.
pub async fn caller_of(conn: &Connection, hdr: &Header<'_>) -> Caller {
    let mut caller = Caller {
        transport: Transport::Dbus,
        uid: None,
        gid: None,
        pid: None,
        bus_name: hdr.sender().map(|s| s.to_string()),
    };
    let Some(sender) = hdr.sender() else {
        return caller;
    };
    let creds = match zbus::fdo::DBusProxy::new(conn).await {
        Ok(p) => p.get_connection_credentials(sender.clone().into()).await,
        Err(e) => Err(e.into()),
    };
    match creds {
        Ok(c) => {
            caller.uid = c.unix_user_id();
            caller.pid = c.process_id().map(|p| p as i32);
            caller.gid = c.unix_group_ids().and_then(|g| g.first().copied());
        }
        Err(e) => {
            tracing::warn!(sender = %sender, error = %e, "cannot read the caller's bus credentials")
        }
    }
    caller
}

pub struct Manager {
    engine: Engine,
}

/// Count one D-Bus call as the gRPC layer counts its calls (`kiln_rpc_calls_total{transport,
/// method, code}` with `code` the canonical status number, "0" for success, and its
/// latency), and turn the engine's error into the bus error. Every method goes through here.
pub(crate) fn counted<T>(
    engine: &Engine,
    method: &str,
    start: Instant,
    r: Result<T, EngineError>,
) -> Result<T, KilnError> {
    let code = match &r {
        Ok(_) => 0,
        Err(e) => e.kind.status_code(),
    };
    engine
        .metrics()
        .observe_call("dbus", method, &code.to_string(), start.elapsed());
    r.map_err(KilnError::from)
}

/// An optional string argument: D-Bus has no null, "" means none.
pub(crate) fn opt(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

/// A reply as JSON.
pub(crate) fn json_reply<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, KilnError> {
    serde_json::to_string(v).map_err(|e| KilnError::Internal(format!("cannot encode reply: {e}")))
}

#[interface(name = "org.kiln.Kiln1.Manager")]
impl Manager {
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        kiln_engine::VERSION.to_string()
    }

    #[zbus(property)]
    fn state(&self) -> String {
        self.engine.state().as_str().to_string()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn started_at(&self) -> String {
        self.engine.started_at()
    }

    /// Re-read the configuration. Returns the keys applied live and those
    /// that need a restart.
    #[zbus(out_args("applied", "restart_required"))]
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(Vec<String>, Vec<String>), KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.reload(&caller).await;
        let r = counted(&self.engine, "Reload", start, r);
        let r = r?;
        Ok((r.applied, r.restart_required))
    }

    /// Rescan devices now (a recorded machine tree has no hotplug events).
    async fn rescan_devices(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.rescan_devices(&caller).await;
        counted(&self.engine, "RescanDevices", start, r)
    }

    /// A device appeared; its object is at `path`.
    #[zbus(signal)]
    pub async fn device_added(
        emitter: &SignalEmitter<'_>,
        id: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A device went away; its object at `path` is gone.
    #[zbus(signal)]
    pub async fn device_removed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;
}

/// Connect to the chosen bus. `None` for `--bus none`.
pub async fn connect(bus: &BusChoice) -> Result<Option<Connection>, String> {
    let builder = match bus {
        BusChoice::None => return Ok(None),
        BusChoice::System => zbus::connection::Builder::system(),
        BusChoice::Session => zbus::connection::Builder::session(),
        BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str()),
    };
    builder
        .build()
        .await
        .map(Some)
        .map_err(|e| format!("cannot connect to the {bus:?} bus: {e}"))
}

/// Export the manager, claim the name, and publish state changes.
pub async fn serve(conn: &Connection, engine: Engine) -> Result<(), String> {
    conn.object_server()
        .at(
            MANAGER_PATH,
            Manager {
                engine: engine.clone(),
            },
        )
        .await
        .map_err(|e| format!("cannot export {MANAGER_PATH}: {e}"))?;
    conn.request_name(BUS_NAME).await.map_err(|e| {
        format!(
            "cannot own {BUS_NAME}: {e}; is another kilnd on this bus, or does the bus policy (/usr/share/dbus-1/system.d/org.kiln.Kiln1.conf) not let this user own it?"
        )
    })?;
    crate::dbus_devices::serve(conn, engine.clone()).await?;
    crate::dbus_jobs::serve(conn, engine.clone()).await?;
    crate::dbus_models::serve(conn, engine.clone()).await?;
    crate::dbus_storage::serve(conn, engine.clone()).await?;
    crate::dbus_vectors::serve(conn, engine.clone()).await?;
    let conn = conn.clone();
    let mut states = engine.subscribe_state();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let Ok(iface) = conn
                .object_server()
                .interface::<_, Manager>(MANAGER_PATH)
                .await
            else {
                break;
            };
            let m = iface.get().await;
            if let Err(e) = m.state_changed(iface.signal_emitter()).await {
                tracing::debug!(error = %e, "cannot emit PropertiesChanged(State)");
            }
        }
    });
    Ok(())
}
