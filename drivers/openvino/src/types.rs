//! Conversions between the ports' vocabulary and OpenVINO's (element types, hint values).
//! Pure functions; touches nothing.

use kiln_hal::ports::{Dtype, PerformanceHint};
use openvino::ElementType;

use crate::error::{OvError, Result};

/// The dtype of an OpenVINO element type; `what` names the tensor in the error.
pub(crate) fn dtype_of(ty: ElementType, what: &str) -> Result<Dtype> {
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

/// The `PERFORMANCE_HINT` property value.
pub(crate) fn hint_value(h: PerformanceHint) -> &'static str {
    match h {
        PerformanceHint::Latency => "LATENCY",
        PerformanceHint::Throughput => "THROUGHPUT",
        PerformanceHint::CumulativeThroughput => "CUMULATIVE_THROUGHPUT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_types_map_and_unknown_ones_name_the_tensor() {
        assert_eq!(dtype_of(ElementType::Bf16, "x").unwrap(), Dtype::Bf16);
        assert_eq!(dtype_of(ElementType::Boolean, "x").unwrap(), Dtype::Bool);
        let err = dtype_of(ElementType::I4, "input x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("input x") && err.contains("FP32"), "{err}");
        assert_eq!(hint_value(PerformanceHint::Throughput), "THROUGHPUT");
    }
}
