//! Wire types and tonic stubs for every gRPC service kilnd serves: the KServe
//! v2 inference protocol (package `inference`) and kiln's own `kiln.v1`
//! services. Generated code only; no behaviour lives here.

/// KServe v2 / Open Inference Protocol (Triton-compatible field numbers).
pub mod inference {
    tonic::include_proto!("inference");
}

/// kiln's own services.
pub mod kiln {
    pub mod v1 {
        tonic::include_proto!("kiln.v1");
    }
}
