//! kilnd (being written).
