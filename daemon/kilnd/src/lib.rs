//! kilnd, the Kiln daemon: process lifecycle (systemd notify, signals,
//! socket), and the thin gRPC and D-Bus adapters over `kiln_engine::Engine`.
//! Adapters translate wire types and errors; every decision is the engine's.

pub mod cli;
pub mod conn_limit;
pub mod daemon;
pub mod dbus;
pub mod dbus_devices;
pub mod dbus_jobs;
pub mod dbus_models;
pub mod dbus_storage;
pub mod dbus_vectors;
pub mod grpc;
pub mod grpc_inference;
pub mod grpc_jobs;
pub mod grpc_storage;
pub mod grpc_vectors;
pub mod logging;
pub mod metrics_http;
pub mod notify;
pub mod polkit;
pub mod probe;
pub mod socket;
