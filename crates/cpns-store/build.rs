//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the SQL files, and
//! without this Cargo would not notice an edited or added migration.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
