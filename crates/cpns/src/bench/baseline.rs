//! Placeholder until the baselines land.
use super::stats::Rate;
use std::path::Path;
use std::time::Duration;
pub async fn mosquitto_connect_rate(_: &Path, _: Duration, _: usize) -> anyhow::Result<Rate> {
    anyhow::bail!("todo")
}
pub fn rustls_handshake_ceiling(_: Duration) -> anyhow::Result<Rate> {
    Ok(Rate::new(Default::default(), Duration::from_secs(1), None))
}
pub fn mosquitto_available() -> bool {
    false
}
