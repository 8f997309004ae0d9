//! In-memory tests of the machines (being written).
