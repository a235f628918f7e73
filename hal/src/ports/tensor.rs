//! Tensors as the engine sees them: KServe v2 dtype names, shapes with -1 for dynamic
//! dimensions, and little-endian raw bytes: what transports decode, the engine validates
//! and every inference backend consumes. Pure data; touches nothing.

use std::fmt;

use super::error::PortError;

type Result<T, E = PortError> = std::result::Result<T, E>;

/// Element types that have a KServe v2 dtype name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `BOOL` (one byte, 0 or 1)
    Bool,
    /// `UINT8`
    U8,
    /// `UINT16`
    U16,
    /// `UINT32`
    U32,
    /// `UINT64`
    U64,
    /// `INT8`
    I8,
    /// `INT16`
    I16,
    /// `INT32`
    I32,
    /// `INT64`
    I64,
    /// `FP16`
    F16,
    /// `FP32`
    F32,
    /// `FP64`
    F64,
    /// `BF16`
    Bf16,
}

impl Dtype {
    /// Every dtype, for iteration.
    pub const ALL: [Dtype; 13] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::F16,
        Dtype::F32,
        Dtype::F64,
        Dtype::Bf16,
    ];

    /// The KServe v2 datatype string.
    pub fn kserve_name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "UINT8",
            Dtype::U16 => "UINT16",
            Dtype::U32 => "UINT32",
            Dtype::U64 => "UINT64",
            Dtype::I8 => "INT8",
            Dtype::I16 => "INT16",
            Dtype::I32 => "INT32",
            Dtype::I64 => "INT64",
            Dtype::F16 => "FP16",
            Dtype::F32 => "FP32",
            Dtype::F64 => "FP64",
            Dtype::Bf16 => "BF16",
        }
    }

    /// Parse a KServe v2 datatype string.
    pub fn from_kserve(name: &str) -> Result<Dtype> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.kserve_name() == name)
            .ok_or_else(|| {
                PortError::invalid(format!(
                    "unknown datatype {name:?}; expected one of {}",
                    Dtype::ALL.map(Dtype::kserve_name).join(", ")
                ))
            })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kserve_name())
    }
}

/// An owned tensor: dtype, static shape, little-endian raw bytes (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Element type.
    pub dtype: Dtype,
    /// Static shape (every dimension >= 0).
    pub shape: Vec<i64>,
    /// `element_count * dtype.size()` bytes, little-endian.
    pub data: Vec<u8>,
}

impl Tensor {
    /// A tensor checked for a consistent byte size.
    pub fn new(dtype: Dtype, shape: Vec<i64>, data: Vec<u8>) -> Result<Tensor> {
        let t = Tensor { dtype, shape, data };
        t.view().check("tensor")?;
        Ok(t)
    }

    /// An all-zero tensor.
    pub fn zeros(dtype: Dtype, shape: &[i64]) -> Result<Tensor> {
        let bytes = byte_size(dtype, shape, "tensor")?;
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            data: vec![0; bytes],
        })
    }

    /// An FP32 tensor from values.
    pub fn from_f32(shape: &[i64], values: &[f32]) -> Result<Tensor> {
        Tensor::new(
            Dtype::F32,
            shape.to_vec(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// An INT32 tensor from values.
    pub fn from_i32(shape: &[i64], values: &[i32]) -> Result<Tensor> {
        Tensor::new(
            Dtype::I32,
            shape.to_vec(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// An INT64 tensor from values.
    pub fn from_i64(shape: &[i64], values: &[i64]) -> Result<Tensor> {
        Tensor::new(
            Dtype::I64,
            shape.to_vec(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// The values of an FP32 tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.expect(Dtype::F32)?;
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The values of an INT32 tensor.
    pub fn to_i32(&self) -> Result<Vec<i32>> {
        self.expect(Dtype::I32)?;
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Number of elements.
    pub fn element_count(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// A borrowed view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: &self.shape,
            data: &self.data,
        }
    }

    fn expect(&self, dtype: Dtype) -> Result<()> {
        if self.dtype == dtype {
            Ok(())
        } else {
            Err(PortError::invalid(format!(
                "tensor is {}, not {dtype}",
                self.dtype
            )))
        }
    }
}

impl Tensor {
    /// Stack tensors along dimension 0 (dynamic batching): same dtype and same trailing
    /// dimensions required.
    pub fn concat(parts: &[&Tensor]) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| PortError::invalid("concat needs at least one tensor"))?;
        if first.shape.is_empty() {
            return Err(PortError::invalid(
                "cannot batch scalars: tensors need a batch dimension",
            ));
        }
        let mut batch = 0i64;
        let mut data = Vec::with_capacity(parts.iter().map(|t| t.data.len()).sum());
        for (i, t) in parts.iter().enumerate() {
            if t.dtype != first.dtype
                || t.shape.len() != first.shape.len()
                || t.shape[1..] != first.shape[1..]
            {
                return Err(PortError::invalid(format!(
                    "cannot batch tensor {i} ({} {:?}) with tensor 0 ({} {:?}): dtype and all \
                     dimensions after the first must match",
                    t.dtype, t.shape, first.dtype, first.shape
                )));
            }
            t.view().check(&format!("batch part {i}"))?;
            batch += t.shape[0];
            data.extend_from_slice(&t.data);
        }
        let mut shape = first.shape.clone();
        shape[0] = batch;
        Ok(Tensor {
            dtype: first.dtype,
            shape,
            data,
        })
    }

    /// Split along dimension 0 into parts of the given sizes (they must add up to dim 0).
    pub fn split(&self, sizes: &[i64]) -> Result<Vec<Tensor>> {
        let dim0 = *self
            .shape
            .first()
            .ok_or_else(|| PortError::invalid("cannot split a scalar along dimension 0"))?;
        if sizes.iter().any(|&s| s < 0) || sizes.iter().sum::<i64>() != dim0 {
            return Err(PortError::invalid(format!(
                "split sizes {sizes:?} must be non-negative and add up to dimension 0 ({dim0}) \
                 of shape {:?}",
                self.shape
            )));
        }
        self.view().check("tensor to split")?;
        let row = byte_size(self.dtype, &self.shape[1..], "tensor to split")?;
        let mut out = Vec::with_capacity(sizes.len());
        let mut offset = 0usize;
        for &s in sizes {
            let len = row * s as usize;
            let mut shape = self.shape.clone();
            shape[0] = s;
            out.push(Tensor {
                dtype: self.dtype,
                shape,
                data: self.data[offset..offset + len].to_vec(),
            });
            offset += len;
        }
        Ok(out)
    }
}

/// A borrowed tensor, so callers can infer straight from request buffers without copying.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Static shape.
    pub shape: &'a [i64],
    /// Raw little-endian bytes.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Check that the byte size matches the shape; `what` names the tensor in the error.
    pub fn check(&self, what: &str) -> Result<()> {
        let expected = byte_size(self.dtype, self.shape, what)?;
        if self.data.len() != expected {
            return Err(PortError::invalid(format!(
                "{what}: {} bytes of data, expected {expected} ({} elements of shape {:?} x {} \
                 bytes for {})",
                self.data.len(),
                expected / self.dtype.size(),
                self.shape,
                self.dtype.size(),
                self.dtype
            )));
        }
        Ok(())
    }
}

/// Typed values in the groups of KServe v2 `InferTensorContents`: `bool_contents`,
/// `int_contents` (INT8/16/32), `int64_contents`, `uint_contents` (UINT8/16/32),
/// `uint64_contents`, `fp32_contents`, `fp64_contents`. FP16 and BF16 travel only as raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// BOOL
    Bool(Vec<bool>),
    /// INT8, INT16, INT32
    Int(Vec<i32>),
    /// INT64
    Int64(Vec<i64>),
    /// UINT8, UINT16, UINT32
    Uint(Vec<u32>),
    /// UINT64
    Uint64(Vec<u64>),
    /// FP32
    Fp32(Vec<f32>),
    /// FP64
    Fp64(Vec<f64>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Bool(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Int64(v) => v.len(),
            Values::Uint(v) => v.len(),
            Values::Uint64(v) => v.len(),
            Values::Fp32(v) => v.len(),
            Values::Fp64(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The KServe contents field these values travel in.
    pub fn field_name(&self) -> &'static str {
        match self {
            Values::Bool(_) => "bool_contents",
            Values::Int(_) => "int_contents",
            Values::Int64(_) => "int64_contents",
            Values::Uint(_) => "uint_contents",
            Values::Uint64(_) => "uint64_contents",
            Values::Fp32(_) => "fp32_contents",
            Values::Fp64(_) => "fp64_contents",
        }
    }
}

fn narrow<T: TryFrom<S>, S: Copy + fmt::Display>(
    v: &[S],
    what: &str,
    dtype: Dtype,
) -> Result<Vec<T>> {
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            T::try_from(x).map_err(|_| {
                PortError::invalid(format!(
                    "{what}: value {x} at index {i} does not fit {dtype}"
                ))
            })
        })
        .collect()
}

impl Tensor {
    /// Build a tensor from typed KServe contents; `what` names the tensor in errors. Checks the
    /// contents field matches the dtype, the value count matches the shape and every value
    /// fits the dtype.
    pub fn from_values(dtype: Dtype, shape: &[i64], values: &Values, what: &str) -> Result<Tensor> {
        let count = byte_size(dtype, shape, what)? / dtype.size();
        if values.len() != count {
            return Err(PortError::invalid(format!(
                "{what}: {} values in {}, expected {count} for shape {shape:?}",
                values.len(),
                values.field_name()
            )));
        }
        let data: Vec<u8> = match (dtype, values) {
            (Dtype::Bool, Values::Bool(v)) => v.iter().map(|&b| u8::from(b)).collect(),
            (Dtype::I8, Values::Int(v)) => narrow::<i8, _>(v, what, dtype)?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            (Dtype::I16, Values::Int(v)) => narrow::<i16, _>(v, what, dtype)?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            (Dtype::I32, Values::Int(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (Dtype::I64, Values::Int64(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (Dtype::U8, Values::Uint(v)) => narrow::<u8, _>(v, what, dtype)?,
            (Dtype::U16, Values::Uint(v)) => narrow::<u16, _>(v, what, dtype)?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            (Dtype::U32, Values::Uint(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (Dtype::U64, Values::Uint64(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (Dtype::F32, Values::Fp32(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (Dtype::F64, Values::Fp64(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (Dtype::F16 | Dtype::Bf16, _) => {
                return Err(PortError::invalid(format!(
                    "{what}: {dtype} has no typed contents field; send it in raw_input_contents"
                )));
            }
            (_, v) => {
                return Err(PortError::invalid(format!(
                    "{what}: datatype {dtype} does not travel in {}; use {}",
                    v.field_name(),
                    contents_field(dtype)
                )));
            }
        };
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            data,
        })
    }

    /// Typed contents of this tensor (FP16/BF16: error, they travel raw only).
    pub fn to_values(&self) -> Result<Values> {
        fn le<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            data.chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        let d = &self.data;
        Ok(match self.dtype {
            Dtype::Bool => Values::Bool(d.iter().map(|&b| b != 0).collect()),
            Dtype::I8 => Values::Int(d.iter().map(|&b| i32::from(b as i8)).collect()),
            Dtype::I16 => Values::Int(le(d, |a| i32::from(i16::from_le_bytes(a)))),
            Dtype::I32 => Values::Int(le(d, i32::from_le_bytes)),
            Dtype::I64 => Values::Int64(le(d, i64::from_le_bytes)),
            Dtype::U8 => Values::Uint(d.iter().map(|&b| u32::from(b)).collect()),
            Dtype::U16 => Values::Uint(le(d, |a| u32::from(u16::from_le_bytes(a)))),
            Dtype::U32 => Values::Uint(le(d, u32::from_le_bytes)),
            Dtype::U64 => Values::Uint64(le(d, u64::from_le_bytes)),
            Dtype::F32 => Values::Fp32(le(d, f32::from_le_bytes)),
            Dtype::F64 => Values::Fp64(le(d, f64::from_le_bytes)),
            Dtype::F16 | Dtype::Bf16 => {
                return Err(PortError::unsupported(format!(
                    "{} has no typed contents field; it is returned in raw_output_contents",
                    self.dtype
                )));
            }
        })
    }
}

/// The KServe contents field for a dtype (`raw only` for FP16/BF16).
pub fn contents_field(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::Bool => "bool_contents",
        Dtype::I8 | Dtype::I16 | Dtype::I32 => "int_contents",
        Dtype::I64 => "int64_contents",
        Dtype::U8 | Dtype::U16 | Dtype::U32 => "uint_contents",
        Dtype::U64 => "uint64_contents",
        Dtype::F32 => "fp32_contents",
        Dtype::F64 => "fp64_contents",
        Dtype::F16 | Dtype::Bf16 => "raw contents only",
    }
}

/// Bytes needed for `shape` of `dtype`, with overflow and negative-dimension checks.
pub fn byte_size(dtype: Dtype, shape: &[i64], what: &str) -> Result<usize> {
    let mut n: usize = dtype.size();
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| {
            PortError::invalid(format!(
                "{what}: shape {shape:?} has a negative dimension; every dimension must be >= 0"
            ))
        })?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| PortError::invalid(format!("{what}: shape {shape:?} is too large")))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kserve_names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_kserve(d.kserve_name()).unwrap(), d);
        }
        let err = Dtype::from_kserve("FLOAT").unwrap_err().to_string();
        assert!(err.contains("\"FLOAT\"") && err.contains("FP32"), "{err}");
    }

    #[test]
    fn byte_size_checks() {
        assert_eq!(byte_size(Dtype::F16, &[2, 3], "t").unwrap(), 12);
        assert!(byte_size(Dtype::F32, &[-1, 3], "t").is_err());
        assert!(byte_size(Dtype::F64, &[i64::MAX, i64::MAX], "t").is_err());
        let err = Tensor::new(Dtype::F32, vec![2], vec![0; 7]).unwrap_err();
        assert!(err.to_string().contains("expected 8"), "{err}");
    }

    #[test]
    fn typed_contents_round_trip() {
        let cases = [
            (Dtype::Bool, Values::Bool(vec![true, false])),
            (Dtype::I8, Values::Int(vec![-128, 127])),
            (Dtype::I16, Values::Int(vec![-30000, 5])),
            (Dtype::I32, Values::Int(vec![i32::MIN, 7])),
            (Dtype::I64, Values::Int64(vec![i64::MAX, -1])),
            (Dtype::U8, Values::Uint(vec![0, 255])),
            (Dtype::U16, Values::Uint(vec![65535, 1])),
            (Dtype::U32, Values::Uint(vec![u32::MAX, 2])),
            (Dtype::U64, Values::Uint64(vec![u64::MAX, 3])),
            (Dtype::F32, Values::Fp32(vec![1.5, -0.25])),
            (Dtype::F64, Values::Fp64(vec![1e300, -2.0])),
        ];
        for (dtype, values) in cases {
            let t = Tensor::from_values(dtype, &[2], &values, "x").unwrap();
            assert_eq!(t.data.len(), 2 * dtype.size(), "{dtype}");
            assert_eq!(t.to_values().unwrap(), values, "{dtype}");
        }
        assert_eq!(
            Tensor::from_values(Dtype::I16, &[2], &Values::Int(vec![1, -2]), "x")
                .unwrap()
                .data,
            vec![1, 0, 0xFE, 0xFF]
        );
    }

    #[test]
    fn typed_contents_errors_name_the_problem() {
        let err = |d, s: &[i64], v: &Values| {
            Tensor::from_values(d, s, v, "input t")
                .unwrap_err()
                .to_string()
        };
        let m = err(Dtype::I8, &[2], &Values::Int(vec![1, 300]));
        assert!(m.contains("300 at index 1 does not fit INT8"), "{m}");
        let m = err(Dtype::U8, &[1], &Values::Uint(vec![256]));
        assert!(m.contains("does not fit UINT8"), "{m}");
        let m = err(Dtype::F32, &[3], &Values::Fp32(vec![1.0]));
        assert!(m.contains("1 values in fp32_contents, expected 3"), "{m}");
        let m = err(Dtype::F32, &[1], &Values::Int(vec![1]));
        assert!(
            m.contains("int_contents") && m.contains("fp32_contents"),
            "{m}"
        );
        let m = err(Dtype::F16, &[1], &Values::Fp32(vec![1.0]));
        assert!(m.contains("raw_input_contents"), "{m}");
        let t = Tensor::new(Dtype::Bf16, vec![1], vec![0, 0]).unwrap();
        assert!(t.to_values().is_err());
    }

    #[test]
    fn concat_and_split_along_batch() {
        let a = Tensor::from_f32(&[1, 2], &[1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(&[2, 2], &[3.0, 4.0, 5.0, 6.0]).unwrap();
        let ab = Tensor::concat(&[&a, &b]).unwrap();
        assert_eq!(ab.shape, vec![3, 2]);
        assert_eq!(ab.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let parts = ab.split(&[1, 2]).unwrap();
        assert_eq!(parts, vec![a.clone(), b.clone()]);
        let c = Tensor::from_f32(&[1, 3], &[0.0; 3]).unwrap();
        let err = Tensor::concat(&[&a, &c]).unwrap_err().to_string();
        assert!(err.contains("[1, 3]") && err.contains("[1, 2]"), "{err}");
        let err = ab.split(&[1, 1]).unwrap_err().to_string();
        assert!(err.contains("add up to dimension 0 (3)"), "{err}");
        assert!(Tensor::concat(&[]).is_err());
    }

    #[test]
    fn value_helpers() {
        let t = Tensor::from_f32(&[2], &[1.5, -2.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.0]);
        assert!(t.to_i32().is_err());
        assert_eq!(Tensor::zeros(Dtype::I64, &[3]).unwrap().element_count(), 3);
    }
}
