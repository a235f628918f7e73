//! kilnctl (being written).
