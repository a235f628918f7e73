//! kiln-hal: placeholder until its issue lands.
