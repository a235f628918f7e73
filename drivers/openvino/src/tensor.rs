//! Tensors as the engine sees them: KServe v2 dtype names, shapes with -1 for dynamic
//! dimensions, and little-endian raw bytes. Pure data; touches nothing.

use std::fmt;

use openvino::ElementType;

use crate::error::{OvError, Result};

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
                OvError::InvalidInput(format!(
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

    /// Map an OpenVINO element type; `what` names the tensor for the error.
    pub fn from_element_type(ty: ElementType, what: &str) -> Result<Dtype> {
        Ok(match ty {
            ElementType::Boolean => Dtype::Bool,
            ElementType::U8 => Dtype::U8,
            ElementType::U16 => Dtype::U16,
            ElementType::U32 => Dtype::U32,
            ElementType::U64 => Dtype::U64,
            ElementType::I8 => Dtype::I8,
            ElementType::I16 => Dtype::I16,
            ElementType::I32 => Dtype::I32,
            ElementType::I64 => Dtype::I64,
            ElementType::F16 => Dtype::F16,
            ElementType::F32 => Dtype::F32,
            ElementType::F64 => Dtype::F64,
            ElementType::Bf16 => Dtype::Bf16,
            other => {
                return Err(OvError::Unsupported(format!(
                    "{what} has OpenVINO element type {other}, which has no KServe v2 datatype; \
                     convert the model so this tensor uses BOOL, (U)INT8-64, FP16, FP32, FP64 or BF16"
                )));
            }
        })
    }

    /// The OpenVINO element type.
    pub fn element_type(self) -> ElementType {
        match self {
            Dtype::Bool => ElementType::Boolean,
            Dtype::U8 => ElementType::U8,
            Dtype::U16 => ElementType::U16,
            Dtype::U32 => ElementType::U32,
            Dtype::U64 => ElementType::U64,
            Dtype::I8 => ElementType::I8,
            Dtype::I16 => ElementType::I16,
            Dtype::I32 => ElementType::I32,
            Dtype::I64 => ElementType::I64,
            Dtype::F16 => ElementType::F16,
            Dtype::F32 => ElementType::F32,
            Dtype::F64 => ElementType::F64,
            Dtype::Bf16 => ElementType::Bf16,
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
            Err(OvError::InvalidInput(format!(
                "tensor is {}, not {dtype}",
                self.dtype
            )))
        }
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
            return Err(OvError::InvalidInput(format!(
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

/// Bytes needed for `shape` of `dtype`, with overflow and negative-dimension checks.
pub fn byte_size(dtype: Dtype, shape: &[i64], what: &str) -> Result<usize> {
    let mut n: usize = dtype.size();
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| {
            OvError::InvalidInput(format!(
                "{what}: shape {shape:?} has a negative dimension; every dimension must be >= 0"
            ))
        })?;
        n = n.checked_mul(d).ok_or_else(|| {
            OvError::InvalidInput(format!("{what}: shape {shape:?} is too large"))
        })?;
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
            assert_eq!(Dtype::from_element_type(d.element_type(), "x").unwrap(), d);
        }
        let err = Dtype::from_kserve("FLOAT").unwrap_err().to_string();
        assert!(err.contains("\"FLOAT\"") && err.contains("FP32"), "{err}");
    }

    #[test]
    fn unsupported_element_type_names_tensor() {
        let err = Dtype::from_element_type(ElementType::I4, "input x").unwrap_err();
        assert!(err.to_string().contains("input x"), "{err}");
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
    fn value_helpers() {
        let t = Tensor::from_f32(&[2], &[1.5, -2.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.0]);
        assert!(t.to_i32().is_err());
        assert_eq!(Tensor::zeros(Dtype::I64, &[3]).unwrap().element_count(), 3);
    }
}
