//! kiln-jobs: job specs, queue and process supervision (being written).
