//! kiln-engine (being written).
