//! kiln-openvino: placeholder until its issue lands.
