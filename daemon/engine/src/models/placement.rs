//! Placement: the ordered device candidates for a model (explicit, preferred, or automatic
//! from measured throughput), static shapes for devices that need them (NPU), and the
//! calibration figures stored per (model, version, device) in the state database. Touches
//! the `model_calibration` table only.

use super::repo::ModelSettings;
use crate::state::StateDb;
use kiln_hal::ports::{BackendDevice as OvDevice, PortInfo};
use rusqlite::{OptionalExtension, params};

/// A stored throughput measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub per_second: f64,
}

/// Stored figure for this exact model file size, if any.
pub fn stored(
    db: &StateDb,
    model: &str,
    version: u64,
    device: &str,
    weights_bytes: u64,
) -> Option<Measured> {
    db.with(|c| {
        c.query_row(
            "SELECT per_second FROM model_calibration
             WHERE model = ?1 AND version = ?2 AND device = ?3 AND weights_bytes = ?4",
            params![model, version as i64, device, weights_bytes as i64],
            |r| r.get::<_, f64>(0),
        )
        .optional()
    })
    .ok()
    .flatten()
    .map(|per_second| Measured { per_second })
}

pub fn store(
    db: &StateDb,
    model: &str,
    version: u64,
    device: &str,
    weights_bytes: u64,
    per_s: f64,
) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let r = db.with(|c| {
        c.execute(
            "INSERT INTO model_calibration (model, version, device, weights_bytes, per_second, measured_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(model, version, device) DO UPDATE SET
               weights_bytes = excluded.weights_bytes, per_second = excluded.per_second,
               measured_at = excluded.measured_at",
            params![model, version as i64, device, weights_bytes as i64, per_s, now],
        )
        .map(|_| ())
    });
    if let Err(e) = r {
        tracing::warn!(error = %e, model, "cannot store the calibration figure");
    }
}

/// True when OpenVINO lists `dev` (`GPU` matches `GPU.0`; virtual devices pass).
pub fn listed(dev: &str, devices: &[OvDevice]) -> bool {
    if ["AUTO", "HETERO", "MULTI", "BATCH"]
        .iter()
        .any(|v| dev == *v || dev.starts_with(&format!("{v}:")))
    {
        return true;
    }
    devices.iter().any(|d| {
        d.name == dev
            || d.name.starts_with(&format!("{dev}."))
            || (dev.ends_with(".0") && d.name == dev.trim_end_matches(".0"))
    })
}

/// The devices to try, in order. `explicit` (a load parameter) wins, then the model's
/// preference list; CPU is always the last resort. With neither, `auto` is true and the
/// engine orders OpenVINO's devices by measured throughput.
pub fn candidates(
    explicit: Option<&str>,
    settings: &ModelSettings,
    devices: &[OvDevice],
) -> (Vec<String>, bool) {
    let mut v: Vec<String> = match explicit {
        Some(d) => vec![d.trim().to_ascii_uppercase()],
        None => settings.devices.clone(),
    };
    let auto = v.is_empty();
    if auto {
        v = devices.iter().map(|d| d.name.clone()).collect();
    }
    if !v.iter().any(|d| d == "CPU") {
        v.push("CPU".into());
    }
    (v, auto)
}

/// Static shapes for a device that needs them: the model's `static_shape` setting, else
/// `[1, max_sequence_length]` for 2-D token inputs of embedding models. Errors name the
/// input and the setting to add.
pub fn static_shapes(
    inputs: &[PortInfo],
    settings: &ModelSettings,
    device: &str,
) -> Result<Vec<(String, Vec<i64>)>, String> {
    let mut out = Vec::new();
    for p in inputs {
        if let Some(s) = settings.static_shape.get(&p.name) {
            out.push((p.name.clone(), s.clone()));
            continue;
        }
        if p.is_static() {
            continue;
        }
        match settings.max_sequence_length {
            Some(l) if settings.kind == "embedding" && !p.rank_dynamic && p.shape.len() == 2 => {
                out.push((p.name.clone(), vec![1, l]))
            }
            _ => {
                return Err(format!(
                    "{device} needs static shapes, input {} has shape {:?}; set [model] static_shape = {{ {} = [...] }} in kiln-model.toml",
                    p.name,
                    if p.rank_dynamic {
                        vec![]
                    } else {
                        p.shape.clone()
                    },
                    p.name
                ));
            }
        }
    }
    Ok(out)
}

/// Calibration input shapes for a dynamic model: -1 becomes 1 for the batch dimension and
/// the static/sequence length elsewhere. `None` when the rank itself is unknown.
pub fn calibration_shapes(
    inputs: &[PortInfo],
    settings: &ModelSettings,
) -> Option<Vec<(String, Vec<i64>)>> {
    inputs
        .iter()
        .map(|p| {
            if p.rank_dynamic {
                return None;
            }
            if let Some(s) = settings.static_shape.get(&p.name) {
                return Some((p.name.clone(), s.clone()));
            }
            let dims = p
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match (d, i) {
                    (d, _) if d >= 0 => d,
                    (_, 0) => 1,
                    _ => settings.max_sequence_length.unwrap_or(1),
                })
                .collect();
            Some((p.name.clone(), dims))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_hal::ports::Dtype;

    fn dev(name: &str) -> OvDevice {
        OvDevice {
            name: name.into(),
            full_name: String::new(),
            optimization_capabilities: vec![],
            architecture: String::new(),
            device_type: String::new(),
        }
    }

    fn port(name: &str, shape: &[i64]) -> PortInfo {
        PortInfo {
            name: name.into(),
            dtype: Dtype::I64,
            shape: shape.to_vec(),
            rank_dynamic: false,
        }
    }

    #[test]
    fn candidates_end_with_cpu_and_auto_uses_openvino_devices() {
        let devs = [dev("CPU"), dev("GPU.0")];
        let mut s = ModelSettings::default();
        assert_eq!(
            candidates(None, &s, &devs),
            (vec!["CPU".to_string(), "GPU.0".into()], true)
        );
        s.devices = vec!["NPU".into()];
        assert_eq!(
            candidates(None, &s, &devs),
            (vec!["NPU".to_string(), "CPU".into()], false)
        );
        assert_eq!(candidates(Some("gpu"), &s, &devs).0, ["GPU", "CPU"]);
        assert!(listed("GPU", &devs) && listed("AUTO", &devs) && !listed("NPU", &devs));
    }

    #[test]
    fn static_shapes_from_settings_or_sequence_length() {
        let ins = [port("input_ids", &[-1, -1]), port("fixed", &[1, 4])];
        let mut s = ModelSettings::default();
        let e = static_shapes(&ins, &s, "NPU").unwrap_err();
        assert!(e.contains("input_ids") && e.contains("static_shape"), "{e}");
        s.kind = "embedding".into();
        s.max_sequence_length = Some(128);
        assert_eq!(
            static_shapes(&ins, &s, "NPU").unwrap(),
            vec![("input_ids".to_string(), vec![1, 128])]
        );
        assert_eq!(
            calibration_shapes(&ins, &s).unwrap(),
            vec![
                ("input_ids".to_string(), vec![1, 128]),
                ("fixed".to_string(), vec![1, 4])
            ]
        );
    }

    #[test]
    fn calibration_round_trips_and_is_keyed_by_weights_size() {
        let t = tempfile::tempdir().unwrap();
        let db = StateDb::open(t.path()).unwrap();
        assert!(stored(&db, "m", 1, "CPU", 10).is_none());
        store(&db, "m", 1, "CPU", 10, 123.5);
        assert_eq!(stored(&db, "m", 1, "CPU", 10).unwrap().per_second, 123.5);
        assert!(
            stored(&db, "m", 1, "CPU", 11).is_none(),
            "a changed file is re-measured"
        );
        store(&db, "m", 1, "CPU", 11, 99.0);
        assert_eq!(stored(&db, "m", 1, "CPU", 11).unwrap().per_second, 99.0);
    }
}
