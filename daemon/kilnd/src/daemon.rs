//! The daemon's life: load config, open state, bind the socket, start the
//! transports, tell systemd we are ready, then handle signals (SIGHUP
//! reloads; SIGTERM/SIGINT drain and exit 0) and feed the watchdog.

use crate::cli::Cli;
use crate::{dbus, grpc, logging, metrics_http, notify, polkit, socket};
use kiln_engine::config::{self, BusChoice};
use kiln_engine::state::StateDb;
use kiln_engine::{Authority, Caller, ComponentState, DaemonState, Engine, GroupAuthority};
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// `kilnd check-config`: exit 0 when valid, 1 with every problem otherwise.
pub fn check_config(cli: &Cli) -> ExitCode {
    match config::load(&cli.sources()) {
        Ok(l) => {
            let files: Vec<String> = l.files.iter().map(|p| p.display().to_string()).collect();
            if files.is_empty() {
                println!("configuration ok (no files found; built-in defaults)");
            } else {
                println!("configuration ok: {}", files.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

pub fn run(cli: &Cli) -> ExitCode {
    let sources = cli.sources();
    let loaded = match config::load(&sources) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "kilnd: configuration error:\n{e}\nhint: fix it, then check with `kilnd check-config`"
            );
            return ExitCode::from(1);
        }
    };
    let log = logging::init(&loaded.config.daemon.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kilnd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kilnd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(loaded, sources, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kilnd: {e}");
            notify::notify(&format!("STATUS=failed: {e}"));
            ExitCode::from(1)
        }
    }
}

/// Polkit when configured and the system bus answers; the group rule otherwise.
async fn choose_authority(
    engine_cfg: &kiln_engine::Config,
) -> (Box<dyn Authority>, ComponentState, String) {
    let group = engine_cfg.auth.group.clone();
    if engine_cfg.auth.backend == "polkit" {
        match dbus::connect(&BusChoice::System).await {
            Ok(Some(conn)) => {
                return (
                    Box::new(polkit::PolkitAuthority::new(conn)),
                    ComponentState::Ok,
                    "polkit".into(),
                );
            }
            Ok(None) => {}
            Err(e) => {
                let detail = format!(
                    "polkit unreachable ({e}); mutations allowed for root and group {group:?} only. Start the system bus and polkitd, or set auth.backend = \"group\""
                );
                return (
                    Box::new(GroupAuthority::new(group)),
                    ComponentState::Degraded,
                    detail,
                );
            }
        }
    }
    (
        Box::new(GroupAuthority::new(group.clone())),
        ComponentState::Ok,
        format!("group {group:?}"),
    )
}

async fn serve(
    loaded: config::LoadedConfig,
    sources: kiln_engine::ConfigSources,
    log: logging::LogControl,
) -> Result<(), String> {
    let cfg = loaded.config.clone();
    notify::notify("STATUS=starting");
    // Handlers first: a signal that arrives right after READY must not kill us.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let bound = socket::bind(&cfg.daemon.socket, &cfg.daemon.socket_group)?;
    let db = match StateDb::open(&cfg.daemon.state_dir) {
        Ok(db) => db,
        Err(e) => {
            bound.remove();
            return Err(e.to_string());
        }
    };
    let (authority, auth_state, auth_detail) = choose_authority(&cfg).await;
    let engine = match Engine::new(loaded, sources, db, authority, Box::new(log)) {
        Ok(e) => e,
        Err(e) => {
            bound.remove();
            return Err(e);
        }
    };
    engine.place_daemon_threads();
    if let Err(e) = engine.start_device_monitor() {
        tracing::warn!("{e}");
        engine.set_component("hal", ComponentState::Degraded, e);
    }
    engine.set_component("auth", auth_state, auth_detail);
    engine.start_storage();
    // Vector collections load from the embeddings dataset before READY.
    engine.start_vectors().await;
    // Models load before READY (like Triton): clients see them ready once kilnd is.
    engine.start_models().await;
    // Jobs: re-adopt what a previous kilnd left running, then schedule.
    match std::env::current_exe() {
        Ok(program) => {
            engine
                .start_jobs(kiln_engine::jobs::ShimCommand {
                    program,
                    args: vec!["job-shim".into()],
                })
                .await
        }
        Err(e) => engine.set_component(
            "jobs",
            ComponentState::Disabled,
            format!("cannot find the kilnd executable for job supervisors: {e}"),
        ),
    }
    engine.set_component("grpc", ComponentState::Ok, bound.path.display().to_string());

    let listener =
        tokio::net::UnixListener::from_std(bound.listener.try_clone().map_err(|e| e.to_string())?)
            .map_err(|e| format!("cannot use socket {}: {e}", bound.path.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut grpc_stop = stop_rx.clone();
    let grpc_task = tokio::spawn(grpc::serve(engine.clone(), listener, async move {
        let _ = grpc_stop.wait_for(|s| *s).await;
    }));

    // D-Bus is optional: a missing bus disables only the D-Bus API.
    let bus = cfg.bus();
    let _bus_conn = match dbus::connect(&bus).await {
        Ok(None) => {
            engine.set_component("dbus", ComponentState::Disabled, "--bus none");
            None
        }
        Ok(Some(conn)) => match dbus::serve(&conn, engine.clone()).await {
            Ok(()) => {
                engine.set_component(
                    "dbus",
                    ComponentState::Ok,
                    format!("{} on {}", dbus::BUS_NAME, cfg.dbus.bus),
                );
                Some(conn)
            }
            Err(e) => {
                tracing::warn!("{e}");
                engine.set_component("dbus", ComponentState::Degraded, e);
                None
            }
        },
        Err(e) => {
            let detail =
                format!("{e}; the D-Bus API is off until the bus is reachable and kilnd restarts");
            tracing::warn!("{detail}");
            engine.set_component("dbus", ComponentState::Degraded, detail);
            None
        }
    };

    match cfg.metrics_listen() {
        Ok(listen) => match metrics_http::serve(listen, engine.clone(), stop_rx.clone()).await {
            Ok(at) if at == "off" => engine.set_component(
                "metrics",
                ComponentState::Disabled,
                "metrics.listen is empty",
            ),
            Ok(at) => engine.set_component("metrics", ComponentState::Ok, at),
            Err(e) => {
                tracing::warn!("{e}");
                engine.set_component("metrics", ComponentState::Degraded, e);
            }
        },
        Err(e) => engine.set_component("metrics", ComponentState::Degraded, e),
    }

    engine.set_state(DaemonState::Running);
    let ready_status = format!("STATUS=serving on {}", bound.path.display());
    notify::notify(&format!("READY=1\n{ready_status}"));
    tracing::info!(socket = %bound.path.display(), bus = %cfg.dbus.bus, version = kiln_engine::VERSION, "kilnd ready");

    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify::notify("WATCHDOG=1");
            }
        });
    }

    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading", notify::monotonic_usec()));
                let status = match engine.reload(&Caller::internal()).await {
                    Ok(r) if r.restart_required.is_empty() => format!("reloaded; applied {:?}", r.applied),
                    Ok(r) => format!("reloaded; applied {:?}; restart needed for {:?}", r.applied, r.restart_required),
                    Err(e) => format!("reload failed, running config kept: {e}"),
                };
                notify::notify(&format!("READY=1\nSTATUS={status}"));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    // Drain: stop accepting, let in-flight calls finish, bounded.
    engine.set_state(DaemonState::Stopping);
    notify::notify("STOPPING=1\nSTATUS=draining");
    tracing::info!("stopping: draining in-flight calls");
    let drain = Duration::from_millis(engine.config().daemon.drain_timeout_ms);
    let _ = stop_tx.send(true);
    match tokio::time::timeout(drain, grpc_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "gRPC task failed"),
        Err(_) => tracing::warn!(
            timeout_ms = drain.as_millis() as u64,
            "drain timed out; closing remaining calls"
        ),
    }
    engine.stop_models().await;
    engine.stop_device_monitor();
    bound.remove();
    tracing::info!("kilnd stopped");
    Ok(())
}
