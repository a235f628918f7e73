//! kiln-tests (being written).
