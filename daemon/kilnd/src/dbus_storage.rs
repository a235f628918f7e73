//! D-Bus storage object: `org.kiln.Kiln1.Storage` at `/org/kiln/Kiln1/storage`. Methods
//! mirror `kiln.v1.Storage`; results are JSON strings (the engine's report types) so
//! desktop tools and scripts get every field. The caller comes from the bus credentials;
//! the engine authorises. Model import emits `ImportProgress` signals while copying.

use crate::dbus::{KilnError, caller_of, counted, json_reply, opt};
use kiln_engine::Engine;
use std::path::PathBuf;
use std::time::Instant;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

pub const STORAGE_PATH: &str = "/org/kiln/Kiln1/storage";

pub struct StorageObject {
    engine: Engine,
}

#[interface(name = "org.kiln.Kiln1.Storage")]
impl StorageObject {
    /// Full storage status as JSON (backend, datasets with requested/effective
    /// properties and fallback reasons, pool health, scrub, ARC).
    async fn status(&self) -> Result<String, KilnError> {
        let start = Instant::now();
        let r = self.engine.storage_status().await;
        let r = counted(&self.engine, "Storage.Status", start, r);
        json_reply(&r?)
    }

    /// Snapshots of `dataset` ("" for all) as a JSON array, oldest first.
    async fn list_snapshots(&self, dataset: &str) -> Result<String, KilnError> {
        let start = Instant::now();
        let r = self.engine.list_snapshots(opt(dataset)).await;
        let r = counted(&self.engine, "Storage.ListSnapshots", start, r);
        json_reply(&r?)
    }

    /// Snapshot a dataset; returns the snapshot as JSON.
    async fn snapshot(
        &self,
        dataset: &str,
        name: &str,
        keep: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.snapshot(&caller, dataset, name, keep).await;
        let r = counted(&self.engine, "Storage.Snapshot", start, r);
        json_reply(&r?)
    }

    /// Roll a dataset back to a snapshot; returns the report as JSON.
    async fn rollback(
        &self,
        dataset: &str,
        name: &str,
        destroy_newer: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self
            .engine
            .rollback(&caller, dataset, name, destroy_newer)
            .await;
        let r = counted(&self.engine, "Storage.Rollback", start, r);
        json_reply(&r?)
    }

    /// Apply the retention grid to `dataset` ("" for all); returns the reports as JSON.
    async fn prune(
        &self,
        dataset: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.prune(&caller, opt(dataset)).await;
        let r = counted(&self.engine, "Storage.Prune", start, r);
        json_reply(&r?)
    }

    /// Import a file or directory (absolute path) as the next version of model `name`;
    /// returns the outcome as JSON. Progress arrives as ImportProgress signals.
    async fn import_model(
        &self,
        path: &str,
        name: &str,
        load: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, u64)>(4);
        // The engine calls this at its progress rate (PROGRESS_EVERY).
        let progress = move |done: u64, total: u64| {
            let _ = tx.try_send((done, total));
        };
        let model = name.to_string();
        let emitter = emitter.into_owned();
        let signals = tokio::spawn(async move {
            while let Some((done, total)) = rx.recv().await {
                let _ = StorageObject::import_progress(&emitter, &model, done, total).await;
            }
        });
        let r = self
            .engine
            .import_model(&caller, &PathBuf::from(path), name, load, progress)
            .await;
        let _ = signals.await;
        let r = counted(&self.engine, "Storage.ImportModel", start, r);
        json_reply(&r?)
    }

    /// Restore model `name` as it was at `version`; returns the report as JSON.
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
        let r = counted(&self.engine, "Storage.RollbackModel", start, r);
        json_reply(&r?)
    }

    /// Bytes copied so far of a running model import.
    #[zbus(signal)]
    async fn import_progress(
        emitter: &SignalEmitter<'_>,
        name: &str,
        done_bytes: u64,
        total_bytes: u64,
    ) -> zbus::Result<()>;
}

/// Export the storage object.
pub async fn serve(conn: &Connection, engine: Engine) -> Result<(), String> {
    conn.object_server()
        .at(STORAGE_PATH, StorageObject { engine })
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot export {STORAGE_PATH}: {e}"))
}
