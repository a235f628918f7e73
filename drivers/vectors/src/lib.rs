//! kiln-vectors: placeholder until its issue lands.
