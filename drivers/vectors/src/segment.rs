//! On-disk format of a collection: append-only segment files plus a JSON manifest that is
//! the commit point. Files are written crash-safe (temp file, fsync, rename, fsync dir).
//! Touches only the collection directory it is handed.
//!
//! Segment file (little endian): magic `KILNVSEG`, u32 format (1), u32 kind (1 add,
//! 2 delete), u32 dim, u32 flags (bit 0: metadata present), u64 count, count × u64 ids,
//! then for adds count × dim × f32 and, with metadata, count × (u32 length or u32::MAX
//! for none, UTF-8 bytes); last a u32 CRC-32 of everything before it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VectorError};
use crate::index::{Metric, Quantisation};

const MAGIC: &[u8; 8] = b"KILNVSEG";
const FORMAT: u32 = 1;
pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SegmentKind {
    Add,
    Delete,
}

/// One segment listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SegmentRef {
    pub file: String,
    pub kind: SegmentKind,
    pub count: u64,
    pub bytes: u64,
    pub crc32: u32,
}

/// The committed state of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    pub name: String,
    pub dim: usize,
    pub metric: Metric,
    pub quantisation: Quantisation,
    pub next_segment: u64,
    pub segments: Vec<SegmentRef>,
}

/// Decoded segment contents.
#[derive(Debug)]
pub(crate) enum Segment {
    Add {
        ids: Vec<u64>,
        vectors: Vec<f32>,
        metadata: Option<Vec<Option<String>>>,
    },
    Delete {
        ids: Vec<u64>,
    },
}

pub(crate) fn encode_add(
    dim: usize,
    ids: &[u64],
    vectors: &[f32],
    metadata: Option<&[Option<String>]>,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(40 + ids.len() * (8 + dim * 4));
    header(&mut b, 1, dim, metadata.is_some(), ids.len());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    for v in vectors {
        b.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(meta) = metadata {
        for m in meta {
            match m {
                Some(s) => {
                    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
                None => b.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
    }
    finish(b)
}

pub(crate) fn encode_delete(dim: usize, ids: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(40 + ids.len() * 8);
    header(&mut b, 2, dim, false, ids.len());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    finish(b)
}

fn header(b: &mut Vec<u8>, kind: u32, dim: usize, meta: bool, count: usize) {
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT.to_le_bytes());
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&(dim as u32).to_le_bytes());
    b.extend_from_slice(&(meta as u32).to_le_bytes());
    b.extend_from_slice(&(count as u64).to_le_bytes());
}

fn finish(mut b: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decodes and verifies a segment against what the manifest says about it.
pub(crate) fn decode(path: &Path, bytes: &[u8], r: &SegmentRef, dim: usize) -> Result<Segment> {
    let bad = |why: &str| VectorError::corrupt(path, why);
    if bytes.len() as u64 != r.bytes {
        return Err(bad(&format!(
            "size is {} bytes, manifest says {}",
            bytes.len(),
            r.bytes
        )));
    }
    if bytes.len() < 36 {
        return Err(bad("file too short"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(tail.try_into().map_err(|_| bad("short checksum"))?);
    if crc != crc32fast::hash(body) || crc != r.crc32 {
        return Err(bad("checksum mismatch"));
    }
    let mut rd = Reader { b: body, at: 0 };
    if rd.take(8) != Some(MAGIC.as_slice()) {
        return Err(bad("not a kiln vector segment (bad magic)"));
    }
    let trunc = || bad("truncated segment");
    let format = rd.u32().ok_or_else(trunc)?;
    if format != FORMAT {
        return Err(bad(&format!("unsupported segment format {format}")));
    }
    let kind = rd.u32().ok_or_else(trunc)?;
    let sdim = rd.u32().ok_or_else(trunc)? as usize;
    let flags = rd.u32().ok_or_else(trunc)?;
    let count = rd.u64().ok_or_else(trunc)?;
    if sdim != dim {
        return Err(bad(&format!(
            "segment dimension {sdim}, collection dimension {dim}"
        )));
    }
    if count != r.count || count > (body.len() / 8) as u64 {
        return Err(bad("record count does not match the manifest"));
    }
    let count = count as usize;
    let ids: Vec<u64> = (0..count)
        .map(|_| rd.u64())
        .collect::<Option<_>>()
        .ok_or_else(trunc)?;
    let seg = match (kind, r.kind) {
        (1, SegmentKind::Add) => {
            let raw = rd.take(count * dim * 4).ok_or_else(trunc)?;
            let vectors = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let metadata = if flags & 1 == 1 {
                let mut m = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = rd.u32().ok_or_else(trunc)?;
                    if len == u32::MAX {
                        m.push(None);
                    } else {
                        let s = rd.take(len as usize).ok_or_else(trunc)?;
                        let s = std::str::from_utf8(s).map_err(|_| bad("metadata is not UTF-8"))?;
                        m.push(Some(s.to_owned()));
                    }
                }
                Some(m)
            } else {
                None
            };
            Segment::Add {
                ids,
                vectors,
                metadata,
            }
        }
        (2, SegmentKind::Delete) => Segment::Delete { ids },
        _ => return Err(bad("segment kind does not match the manifest")),
    };
    if rd.at != body.len() {
        return Err(bad("trailing bytes after the records"));
    }
    Ok(seg)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VectorError::io(dir, e))
}

/// Writes `dir/name` atomically: `name.tmp`, fsync, rename, fsync `dir`.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| VectorError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| VectorError::io(&tmp, e))?;
        f.sync_all().map_err(|e| VectorError::io(&tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| VectorError::io(&dst, e))?;
        fsync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

pub(crate) fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(m).map_err(|e| VectorError::io(dir.join(MANIFEST), e.into()))?;
    write_atomic(dir, MANIFEST, &json)
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = fs::read(&path).map_err(|e| VectorError::io(&path, e))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| VectorError::corrupt(&path, format!("unreadable manifest: {e}")))?;
    if m.format != MANIFEST_FORMAT {
        return Err(VectorError::corrupt(
            &path,
            format!("unsupported manifest format {}", m.format),
        ));
    }
    Ok(m)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detected() {
        let ids = [7u64, 9];
        let v = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let meta = [Some("a".to_string()), None];
        let b = encode_add(3, &ids, &v, Some(&meta));
        let r = SegmentRef {
            file: "x".into(),
            kind: SegmentKind::Add,
            count: 2,
            bytes: b.len() as u64,
            crc32: crc32fast::hash(&b[..b.len() - 4]),
        };
        match decode(Path::new("x"), &b, &r, 3).unwrap() {
            Segment::Add {
                ids: i,
                vectors,
                metadata,
            } => {
                assert_eq!(i, ids);
                assert_eq!(vectors, v);
                assert_eq!(metadata.unwrap(), meta);
            }
            _ => panic!("wrong kind"),
        }
        let mut broken = b.clone();
        broken[40] ^= 1;
        let err = decode(Path::new("x"), &broken, &r, 3).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = decode(Path::new("x"), &b[..b.len() - 1], &r, 3).unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }
}
