//! kilnctl: the command-line client. Talks to kilnd over its gRPC Unix
//! socket; renders tables for people and JSON for scripts. No daemon logic.

pub mod cli;
pub mod client;
pub mod commands;
pub mod devices;
pub mod jobs;
pub mod models;
pub mod storage;
pub mod vectors;
