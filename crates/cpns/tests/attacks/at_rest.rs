//! (D) Another Unix user of the same machine, with the usual umask (022) when everything was
//! made: the server's data directory is 0700, its store (`cpns.db`, its WAL and shared memory)
//! and every device's store are 0600, so that user reads no usage record, no charging record and
//! no status, and cannot list the data directory; a file the test leaves open (0644) beside
//! them shows that the user could read what a mode lets it. Needs root (to make the user and
//! run as it); skipped with a message otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::cpns;
use crate::common::unix_user::{as_other_user, ensure_other_user, running_as_root};
use crate::harness::world;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Whether the other user can read `p` (`cat` it).
fn readable_by_other(p: &Path) -> bool {
    as_other_user("cat", &[p.to_str().unwrap()])
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_unix_user_opens_no_store_and_no_data_directory() {
    let mut w = world(&["phone", "watch"]).start();
    if !running_as_root(&w.path("")) {
        eprintln!("skipped: run as root to test another Unix user against the stores");
        return;
    }
    ensure_other_user();
    // The world's directory is open to others, as a home directory often is: what keeps them
    // out is the mode of each store and of the data directory.
    std::fs::set_permissions(w.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = w.path("open.txt");
    std::fs::write(&open, b"anyone may read this").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        readable_by_other(&open),
        "the other user reads an open file"
    );

    // Devices live: a PN, registrations, status and a private usage record on the phone.
    let mut watch = w.pne("watch").await_invitation().stay().spawn();
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "watch");
    let mut phone = w.pne("phone").setup("all").stay().spawn();
    w.gw().expect_event("pn_established");
    phone.expect_event("rejoined");
    watch.expect_event("rejoined");
    let phone_store = w.store("phone");
    let store = phone_store.to_str().unwrap();
    cpns(&["usage", "prefs", "diary", "private", "--store", store]);
    cpns(&[
        "usage",
        "report",
        "--service",
        "diary",
        "--start",
        "1700000000",
        "--end",
        "1700000060",
        "--bytes",
        "1000",
        "--store",
        store,
    ]);

    let data = w.data_dir();
    assert_eq!(mode(&data), 0o700, "the data directory");
    let listed = as_other_user("ls", &[data.to_str().unwrap()]);
    assert!(
        !listed.status.success(),
        "the other user listed the data directory"
    );
    let mut stores = vec![w.server_db()];
    for id in ["home-gw", "phone", "watch"] {
        stores.push(w.store(id));
    }
    for db in stores {
        for suffix in ["", "-wal", "-shm"] {
            let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            if !p.exists() {
                continue;
            }
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            assert!(
                !readable_by_other(&p),
                "the other user read {}",
                p.display()
            );
        }
    }
    for key in ["master.key", "ca.key", "server.key"] {
        assert_eq!(mode(&data.join(key)), 0o600, "{key}");
    }
}
