//! kiln-api (being written).
