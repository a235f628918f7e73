//! D-Bus models object: `org.kiln.Kiln1.Models` at `/org/kiln/Kiln1/models`, the bus side of
//! `kiln.v1.Models` plus the repository calls of KServe (load, unload) and the model rollback
//! of `kiln.v1.Storage`. Results are the engine's own records as JSON (the same fields the
//! gRPC messages carry); mutations are authorised by the engine against the bus caller
//! (polkit `org.kiln.manage-models`) and audited; errors map to
//! `org.kiln.Kiln1.Error.<Kind>`. No logic here beyond wire conversion.

use crate::dbus::{KilnError, caller_of, counted, json_reply, opt};
use kiln_engine::Engine;
use kiln_engine::models::LoadOptions;
use std::time::Instant;
use zbus::message::Header;
use zbus::{Connection, interface};

pub const MODELS_PATH: &str = "/org/kiln/Kiln1/models";

pub struct ModelsObject {
    engine: Engine,
}

#[interface(name = "org.kiln.Kiln1.Models")]
impl ModelsObject {
    /// Every model version (state, device, precision, reservation, calibration, tensors) as
    /// a JSON array.
    async fn list_models(&self) -> Result<String, KilnError> {
        let start = Instant::now();
        let r = self.engine.list_models().await;
        let r = counted(&self.engine, "Models.ListModels", start, r);
        json_reply(&r?)
    }

    /// Statistics of `name` (`""`: every model) at `version` (`""`: every ready one), JSON.
    async fn stats(&self, name: &str, version: &str) -> Result<String, KilnError> {
        let start = Instant::now();
        let r = self.engine.model_statistics(name, version);
        let r = counted(&self.engine, "Models.Stats", start, r);
        json_reply(&r?)
    }

    /// Load (or reload) the versions the model's policy selects, on `device` (`""`: its
    /// configured placement). Returns the loaded versions as JSON.
    async fn load_model(
        &self,
        name: &str,
        device: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let opts = LoadOptions {
            device: opt(device).map(String::from),
        };
        let r = self.engine.load_model(&caller, name, &opts).await;
        let r = counted(&self.engine, "Models.LoadModel", start, r);
        json_reply(&r?)
    }

    /// Unload every version of a model and return its reservations.
    async fn unload_model(
        &self,
        name: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.unload_model(&caller, name).await;
        counted(&self.engine, "Models.UnloadModel", start, r)
    }

    /// Restore `models/<name>/` exactly as version `version` left it; JSON report.
    async fn rollback_model(
        &self,
        name: &str,
        version: u32,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.rollback_model(&caller, name, version).await;
        let r = counted(&self.engine, "Models.RollbackModel", start, r);
        json_reply(&r?)
    }
}

pub async fn serve(conn: &Connection, engine: Engine) -> Result<(), String> {
    conn.object_server()
        .at(MODELS_PATH, ModelsObject { engine })
        .await
        .map_err(|e| format!("cannot export {MODELS_PATH}: {e}"))?;
    Ok(())
}
