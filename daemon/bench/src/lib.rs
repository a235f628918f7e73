//! kiln-bench (being written).
