//! `cpns bench`: the server's costs measured from outside, side by side with Mosquitto and with
//! the ceilings of the same work done in memory, so that every figure is also a ratio
//! (BENCHMARKS.md).

pub mod baseline;
mod mqtt;
pub mod stats;
