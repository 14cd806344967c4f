//! rotation-worker's integration tests (being written).
