//! gRPC adapter: KServe v2 `inference.GRPCInferenceService` and
//! `kiln.v1.Daemon` on the Unix socket. Translates wire types to engine calls
//! and engine errors to status codes; peer credentials (SO_PEERCRED) come
//! with each connection. Per-call metrics and a request id are added by one
//! tower layer for every service.

use crate::grpc_inference::{InferenceApi, ModelsApi};
use kiln_api::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use kiln_api::kiln::v1::daemon_server::{Daemon, DaemonServer};
use kiln_api::kiln::v1::devices_server::{Devices, DevicesServer};
use kiln_api::kiln::v1::models_server::ModelsServer;
use kiln_api::kiln::v1::{self as pb};
use kiln_engine::auth::Transport;
use kiln_engine::devices::{health_text, hw_id};
use kiln_engine::events::Event;
use kiln_engine::{Caller, Engine, EngineError, ErrorKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Engine error → gRPC status; the message passes through unchanged.
pub fn status_of(e: EngineError) -> Status {
    let code = match e.kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    };
    Status::new(code, e.message)
}

/// The caller of a request, from the connection's peer credentials.
pub fn caller_of<T>(req: &Request<T>) -> Caller {
    // A connection whose maker has exited carries no credentials any more: its pid may name
    // another process now. Only calls that use credentials pay for the check.
    let cred = req
        .extensions()
        .get::<crate::conn_limit::ConnInfo>()
        .filter(|i| i.maker_gone().is_none())
        .and_then(|i| i.uds.peer_cred);
    Caller {
        transport: Transport::Grpc,
        uid: cred.map(|c| c.uid()),
        gid: cred.map(|c| c.gid()),
        pid: cred.and_then(|c| c.pid()),
        bus_name: None,
    }
}

pub struct DaemonApi {
    engine: Engine,
}

#[tonic::async_trait]
impl Daemon for DaemonApi {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.engine.status();
        Ok(Response::new(pb::StatusResponse {
            version: s.version,
            state: s.state.as_str().into(),
            started_at: s.started_at,
            uptime_s: s.uptime_s,
            pid: s.pid,
            socket: s.socket.display().to_string(),
            bus: s.bus,
            log_level: s.log_level,
            config_files: s
                .config_files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            restart_required: s.restart_required,
            components: s
                .components
                .into_iter()
                .map(|c| pb::Component {
                    name: c.name,
                    state: c.state.as_str().into(),
                    detail: c.detail,
                })
                .collect(),
            state_dir: s.state_dir.display().to_string(),
            budget: Some(pb::Budget {
                budget_bytes: s.budget.budget_bytes,
                reserved_bytes: s.budget.reserved_bytes,
                free_bytes: s.budget.free_bytes,
                pressure_some_avg10: s.budget.pressure_some_avg10.unwrap_or(-1.0),
                max_pressure: s.budget.max_pressure,
                reservations: s
                    .budget
                    .reservations
                    .into_iter()
                    .map(|r| pb::Reservation {
                        id: r.id,
                        owner: r.owner,
                        bytes: r.bytes,
                        since: r.since,
                    })
                    .collect(),
            }),
        }))
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let r = self
            .engine
            .reload(&caller_of(&req))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ReloadResponse {
            applied: r.applied,
            restart_required: r.restart_required,
            config_files: r
                .config_files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }))
    }
}

pub struct DevicesApi {
    engine: Engine,
}

/// A HAL device on the wire.
pub fn device_to_pb(d: &kiln_engine::devices::Device) -> pb::Device {
    let (health, detail) = health_text(&d.health);
    pb::Device {
        id: d.id.clone(),
        kind: serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        name: d.identity.name.clone(),
        hw_id: hw_id(d),
        driver: d.identity.driver.clone().unwrap_or_default(),
        address: d.identity.address.clone().unwrap_or_default(),
        capabilities: d.capabilities.clone(),
        health: health.into(),
        health_detail: detail,
        busy_percent: d
            .utilisation
            .as_ref()
            .and_then(|u| u.busy_percent)
            .unwrap_or(-1.0),
        json: serde_json::to_string(d).unwrap_or_default(),
    }
}

pub fn event_to_pb(e: &kiln_engine::devices::DeviceEvent) -> pb::DeviceEvent {
    match e {
        kiln_engine::devices::DeviceEvent::Added(d) => pb::DeviceEvent {
            event: "added".into(),
            id: d.id.clone(),
            device: Some(device_to_pb(d)),
        },
        kiln_engine::devices::DeviceEvent::Changed(d) => pb::DeviceEvent {
            event: "changed".into(),
            id: d.id.clone(),
            device: Some(device_to_pb(d)),
        },
        kiln_engine::devices::DeviceEvent::Removed(id) => pb::DeviceEvent {
            event: "removed".into(),
            id: id.clone(),
            device: None,
        },
    }
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::DeviceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Devices for DevicesApi {
    async fn list(
        &self,
        _: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let inv = self.engine.inventory();
        Ok(Response::new(pb::ListDevicesResponse {
            devices: inv.devices().iter().map(device_to_pb).collect(),
            inventory_json: serde_json::to_string(&inv).unwrap_or_default(),
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        _: Request<pb::WatchDevicesRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = self.engine.events().into_stream().filter_map(|e| match e {
            Event::Device(e) => Some(Ok(event_to_pb(&e))),
            Event::Missed { count } => Some(Err(Status::data_loss(Event::missed_message(count)))),
            _ => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn rescan(
        &self,
        req: Request<pb::RescanDevicesRequest>,
    ) -> Result<Response<pb::RescanDevicesResponse>, Status> {
        let caller = caller_of(&req);
        self.engine
            .rescan_devices(&caller)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RescanDevicesResponse {}))
    }
}

/// Records per-call metrics and wraps each call in a span carrying a request id.
#[derive(Clone)]
pub struct CallLayer {
    engine: Engine,
}

#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    engine: Engine,
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            engine: self.engine.clone(),
        }
    }
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

impl<S, B, RB> tower::Service<http::Request<B>> for CallService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send + 'static,
    RB: Default + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("rpc", request_id = id, method = %method);
        let engine = self.engine.clone();
        let start = Instant::now();
        let conn = req.extensions().get::<crate::conn_limit::ConnInfo>();
        let refused = conn.and_then(|c| {
            c.over
                .map(|(uid, open, limit)| crate::conn_limit::refusal(uid, open, limit))
        });
        if let Some(status) = refused {
            engine.metrics().observe_call(
                "grpc",
                &method,
                &(status.code() as i32).to_string(),
                start.elapsed(),
            );
            let (parts, _) = status.into_http::<()>().into_parts();
            return Box::pin(async move { Ok(http::Response::from_parts(parts, RB::default())) });
        }
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let res = fut.await.map(bad_message_is_invalid_argument);
                let code = match &res {
                    // Errors travel as a trailers-only response with grpc-status in the headers.
                    Ok(r) => r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string(),
                    Err(_) => "transport-error".to_string(),
                };
                engine.metrics().observe_call("grpc", &method, &code, start.elapsed());
                tracing::debug!(code = %code, elapsed_us = start.elapsed().as_micros() as u64, "call finished");
                res
            }
            .instrument(span),
        )
    }
}

/// A request body that does not decode as the method's message is the caller's mistake:
/// tonic answers INTERNAL, kilnd says INVALID_ARGUMENT (the message, which names the field,
/// stays).
fn bad_message_is_invalid_argument<RB>(mut r: http::Response<RB>) -> http::Response<RB> {
    let h = r.headers();
    let decode_failure = h.get("grpc-status").is_some_and(|v| v == "13")
        && h.get("grpc-message").is_some_and(|m| {
            m.as_bytes()
                .starts_with(b"failed%20to%20decode%20Protobuf%20message")
                || m.as_bytes()
                    .starts_with(b"failed to decode Protobuf message")
        });
    if decode_failure {
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    r
}

/// Serve every gRPC service on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max = engine.config().daemon.max_message_bytes;
    // Inference requests may be up to twice the limit on the wire so the engine can refuse
    // the ones above it with INVALID_ARGUMENT and the numbers (beyond that: OUT_OF_RANGE).
    let inference = GrpcInferenceServiceServer::new(InferenceApi {
        engine: engine.clone(),
    })
    .max_decoding_message_size(max.saturating_mul(2))
    .max_encoding_message_size(max);
    let models = ModelsServer::new(ModelsApi {
        engine: engine.clone(),
    });
    let daemon = DaemonServer::new(DaemonApi {
        engine: engine.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let devices = DevicesServer::new(DevicesApi {
        engine: engine.clone(),
    });
    let storage =
        kiln_api::kiln::v1::storage_server::StorageServer::new(crate::grpc_storage::StorageApi {
            engine: engine.clone(),
        });
    let jobs = kiln_api::kiln::v1::jobs_server::JobsServer::new(crate::grpc_jobs::JobsApi {
        engine: engine.clone(),
    });
    let vectors =
        kiln_api::kiln::v1::vectors_server::VectorsServer::new(crate::grpc_vectors::VectorsApi {
            engine: engine.clone(),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    // Python/grpc-core clients send the socket path as :authority; normalise it (see kiln-h2-authority).
    // Each connection counts against its uid (`daemon.max_connections_per_uid`).
    let limits = crate::conn_limit::ConnLimits::new(engine.config().daemon.max_connections_per_uid);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).filter_map(
        move |conn| match conn {
            Ok(s) => limits
                .admit(s)
                .map(|s| Ok(kiln_h2_authority::AuthorityFix::new(s))),
            Err(e) => Some(Err(e)),
        },
    );
    let streams = engine.config().daemon.max_concurrent_streams;
    let timeout = std::time::Duration::from_millis(engine.config().daemon.request_timeout_ms);
    tonic::transport::Server::builder()
        .max_concurrent_streams(streams)
        .timeout(timeout)
        // Connections the rewriter passes through get the same header-list limit from h2.
        .http2_max_header_list_size(kiln_h2_authority::MAX_HEADER_LIST as u32)
        .layer(CallLayer { engine })
        .add_service(inference)
        .add_service(models)
        .add_service(daemon)
        .add_service(devices)
        .add_service(storage)
        .add_service(jobs)
        .add_service(vectors)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
