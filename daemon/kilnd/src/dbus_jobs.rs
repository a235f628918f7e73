//! D-Bus jobs object: `org.kiln.Kiln1.Jobs` at `/org/kiln/Kiln1/jobs`. SubmitJob takes
//! the request as JSON (the engine's `JobRequest` fields: only argv needed); results are the engine's JobInfo as
//! JSON. Errors map to `org.kiln.Kiln1.Error.<Kind>` (e.g. ResourceExhausted). The caller
//! comes from the bus credentials; the engine authorises. `JobChanged` carries each change.

use crate::dbus::{KilnError, caller_of, counted, json_reply};
use kiln_engine::events::Event;
use kiln_engine::jobs::JobRequest;
use kiln_engine::{Engine, EngineError};
use std::time::Instant;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

pub const JOBS_PATH: &str = "/org/kiln/Kiln1/jobs";

pub struct JobsObject {
    engine: Engine,
}

#[interface(name = "org.kiln.Kiln1.Jobs")]
impl JobsObject {
    /// Queue a job. `spec_json`: {"argv": [...]} and optionally "memory_bytes": N, "device":
    /// "cpu", "cpus": "p:4" or {"kind": "performance", "count": 4}, "priority": 0, ... — the
    /// engine fills in the rest as for gRPC. Returns the job as JSON.
    async fn submit_job(
        &self,
        spec_json: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = match JobRequest::from_json(spec_json) {
            Ok(request) => self.engine.submit_job(&caller, request).await,
            Err(e) => Err(EngineError::invalid(e.message)),
        };
        let r = counted(&self.engine, "Jobs.SubmitJob", start, r);
        json_reply(&r?)
    }

    /// Cancel a job; returns it as JSON.
    async fn cancel_job(
        &self,
        id: u64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.cancel_job(&caller, id).await;
        let r = counted(&self.engine, "Jobs.CancelJob", start, r);
        json_reply(&r?)
    }

    /// One job as JSON (env values only for its owner and root).
    async fn get_job(
        &self,
        id: u64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.job_for(&caller, id).await;
        let r = counted(&self.engine, "Jobs.GetJob", start, r);
        json_reply(&r?)
    }

    /// Every job (newest first) as a JSON array (env values only for their owners and root).
    async fn list_jobs(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.jobs_for(&caller).await;
        let r = counted(&self.engine, "Jobs.ListJobs", start, r);
        json_reply(&r?)
    }

    /// A job changed (state, checkpoint). Broadcast to every listener, so it carries the id,
    /// state and detail only: `GetJob` gives the rest to whoever may read it.
    #[zbus(signal)]
    async fn job_changed(
        emitter: &SignalEmitter<'_>,
        id: u64,
        state: &str,
        detail: &str,
    ) -> zbus::Result<()>;
}

pub async fn serve(conn: &Connection, engine: Engine) -> Result<(), String> {
    let mut events = engine.events();
    conn.object_server()
        .at(
            JOBS_PATH,
            JobsObject {
                engine: engine.clone(),
            },
        )
        .await
        .map_err(|e| format!("cannot export {JOBS_PATH}: {e}"))?;
    let conn = conn.clone();
    tokio::spawn(async move {
        let Ok(emitter) = SignalEmitter::new(&conn, JOBS_PATH) else {
            return;
        };
        while let Some(e) = events.next().await {
            let jobs = match e {
                Event::Job(j) => vec![*j],
                // Missed changes: every job again, as it is now.
                Event::Missed { .. } => engine.list_jobs().unwrap_or_default(),
                _ => continue,
            };
            for j in jobs {
                let _ = JobsObject::job_changed(&emitter, j.id, j.state.as_str(), &j.detail).await;
            }
        }
    });
    Ok(())
}
