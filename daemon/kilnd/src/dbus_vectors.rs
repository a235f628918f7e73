//! D-Bus vectors object: `org.kiln.Kiln1.Vectors` at `/org/kiln/Kiln1/vectors`, for desktop
//! tools that search local collections. Vectors travel as `ad` (D-Bus has no 32-bit float),
//! results as JSON (the engine's CollectionInfo and hits). Mutations are authorised by the
//! engine against the bus caller (polkit `org.kiln.manage-models`) and audited; errors map
//! to `org.kiln.Kiln1.Error.<Kind>`. No logic here beyond wire conversion.

use crate::dbus::{KilnError, caller_of, counted, json_reply, opt};
use kiln_engine::Engine;
use std::time::Instant;
use zbus::message::Header;
use zbus::{Connection, interface};

pub const VECTORS_PATH: &str = "/org/kiln/Kiln1/vectors";

pub struct VectorsObject {
    engine: Engine,
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

#[interface(name = "org.kiln.Kiln1.Vectors")]
impl VectorsObject {
    /// Every collection as a JSON array.
    async fn list_collections(&self) -> Result<String, KilnError> {
        let start = Instant::now();
        let r = self.engine.vectors_list();
        let r = counted(&self.engine, "Vectors.ListCollections", start, r);
        json_reply(&r?)
    }

    /// One collection's figures (count, dimension, memory, disk) as JSON.
    async fn stats(&self, name: &str) -> Result<String, KilnError> {
        let start = Instant::now();
        let r = self.engine.vectors_stats(name);
        let r = counted(&self.engine, "Vectors.Stats", start, r);
        json_reply(&r?)
    }

    /// Create a collection. `metric`: ip, cosine or l2; `quantisation`: "" (none) or int8.
    async fn create_collection(
        &self,
        name: &str,
        dim: u64,
        metric: &str,
        quantisation: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self
            .engine
            .vectors_create(&caller, name, dim, metric, quantisation)
            .await;
        let r = counted(&self.engine, "Vectors.CreateCollection", start, r);
        json_reply(&r?)
    }

    /// Add (or replace) vectors: `vectors` holds `ids.len()` rows of the collection's
    /// dimension, row after row. Returns the collection's vector count after.
    async fn add(
        &self,
        name: &str,
        ids: Vec<u64>,
        vectors: Vec<f64>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u64, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self
            .engine
            .vectors_add(&caller, name, ids, to_f32(&vectors), None)
            .await;
        let r = counted(&self.engine, "Vectors.Add", start, r);
        Ok(r? as u64)
    }

    /// Embed `texts` with a loaded model (`model` "" = the collection's default) and add
    /// them under `ids`. Returns the collection's vector count after.
    async fn add_texts(
        &self,
        name: &str,
        ids: Vec<u64>,
        texts: Vec<String>,
        model: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u64, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self
            .engine
            .embed_and_add(&caller, name, ids, texts, None, opt(model))
            .await;
        let r = counted(&self.engine, "Vectors.AddTexts", start, r);
        Ok(r? as u64)
    }

    /// The `k` nearest to one query vector, best first, as a JSON array of hits.
    async fn search(
        &self,
        name: &str,
        query: Vec<f64>,
        k: i64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self
            .engine
            .vectors_search(&caller, name, to_f32(&query), k)
            .await;
        let r = counted(&self.engine, "Vectors.Search", start, r);
        json_reply(&r?.into_iter().next().unwrap_or_default())
    }

    /// The `k` nearest to a text embedded by a loaded model, as a JSON array of hits.
    async fn search_text(
        &self,
        name: &str,
        text: &str,
        k: i64,
        model: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self
            .engine
            .search_text(&caller, name, vec![text.to_string()], k, opt(model))
            .await;
        let r = counted(&self.engine, "Vectors.SearchText", start, r);
        json_reply(&r?.into_iter().next().unwrap_or_default())
    }

    /// Delete vectors by id; returns the collection's vector count after.
    async fn delete(
        &self,
        name: &str,
        ids: Vec<u64>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u64, KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.vectors_delete(&caller, name, ids).await;
        let r = counted(&self.engine, "Vectors.Delete", start, r);
        Ok(r? as u64)
    }

    /// Remove a collection and its files.
    async fn drop_collection(
        &self,
        name: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), KilnError> {
        let start = Instant::now();
        let caller = caller_of(conn, &hdr).await;
        let r = self.engine.vectors_drop(&caller, name).await;
        counted(&self.engine, "Vectors.DropCollection", start, r)
    }
}

pub async fn serve(conn: &Connection, engine: Engine) -> Result<(), String> {
    conn.object_server()
        .at(VECTORS_PATH, VectorsObject { engine })
        .await
        .map_err(|e| format!("cannot export {VECTORS_PATH}: {e}"))?;
    Ok(())
}
