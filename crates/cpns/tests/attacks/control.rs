//! The PN GW's control socket (`cpns pn show`, issue "A PN that lives"): the socket is the
//! owner's only (mode 0600), `cpns pn show` prints the running PN GW's PNs from it, a raw client
//! sending garbage or an oversized line gets an error and disturbs nothing, a second PN GW on
//! the same store is refused while the first runs, and asking when none runs says what to do.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::common::{BIN, names, s};
use crate::harness::{within, world};

async fn cpns(args: &[&str]) -> Output {
    within(
        "a cpns command",
        tokio::process::Command::new(BIN)
            .args(args)
            .env("CPNS_LOG", "error")
            .output(),
    )
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends raw bytes to the control socket and returns every answer line until it closes.
async fn raw(socket: &std::path::Path, bytes: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut all = String::new();
    within("the control socket's answers", s.read_to_string(&mut all))
        .await
        .unwrap();
    all.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pn_show_reads_the_running_gateway_and_bad_requests_change_nothing() {
    let mut w = world(&["phone", "tv"]).enrolled();
    let store = w.store("home-gw");
    let store_arg = store.to_string_lossy().into_owned();
    let socket = std::path::PathBuf::from(format!("{store_arg}.sock"));

    // Nothing runs yet: the command says so and what to do.
    let none = cpns(&["pn", "show", "--store", &store_arg]).await;
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("start it first"),
        "{}",
        stderr(&none)
    );

    w.start();
    let addr = w.server_addr().to_string();
    let gw = w.gw();
    let announced = gw.seen("control_listening");
    assert_eq!(announced.len(), 1, "{:?}", gw.seen);
    assert_eq!(announced[0]["path"], socket.to_string_lossy().as_ref());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let empty = cpns(&["pn", "show", "--store", &store_arg]).await;
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert_eq!(stdout(&empty), "no PNs\n");

    let mut phone = w.pne("phone").setup("1-1").spawn();
    let joined = phone.expect_event("pn_joined");
    phone.succeeds();
    w.gw()
        .expect_event_where("pn_established", |v| v["pn_id"] == joined["pn_id"]);
    let pn_id = joined["pn_id"].as_str().unwrap();

    let shown = cpns(&["pn", "show", "--control", &socket.to_string_lossy()]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert_eq!(
        stdout(&shown),
        format!(
            "PN {pn_id} at home-gw: {}\n",
            names(&joined["members"]).join(", ")
        )
    );
    let json = cpns(&["pn", "show", "--store", &store_arg, "--json"]).await;
    let answer: Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["verb"], "show");
    assert_eq!(answer["pns"][0]["pn_id"], pn_id);
    assert_eq!(answer["pns"][0]["gateway"], "home-gw");

    // Garbage, a request that is not an object, an unknown verb, no verb, another version, a
    // verb of a PNE; a release naming no PN, a malformed PN id and a PN the PN GW does not
    // serve; then an oversized line. Each is refused with its code.
    let answers = raw(
        &socket,
        b"garbage\n[]\n{\"v\":1,\"verb\":\"explode\"}\n{\"v\":1}\n{\"v\":9,\"verb\":\"show\"}\n\
          {\"v\":1,\"verb\":\"join\",\"pn_id\":\"00000000000000000000000000000000\"}\n\
          {\"v\":1,\"verb\":\"release\"}\n\
          {\"v\":1,\"verb\":\"release\",\"pn_id\":\"zz\"}\n\
          {\"v\":1,\"verb\":\"release\",\"pn_id\":\"00000000000000000000000000000000\"}\n",
    )
    .await;
    assert_eq!(answers.len(), 9, "{answers:?}");
    assert!(answers.iter().all(|a| a["ok"] == false), "{answers:?}");
    let codes: Vec<&str> = answers
        .iter()
        .map(|a| a["error"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "bad_request",
            "bad_request",
            "unsupported_message",
            "bad_request",
            "unsupported_version",
            "unsupported_message",
            "bad_request",
            "bad_request",
            "not_found",
        ]
    );
    let mut big = vec![b'x'; 64 * 1024];
    big.push(b'\n');
    let answers = raw(&socket, &big).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["error"]["code"], "bad_request");

    // A second PN GW on the same store is refused while the first runs; the first still serves.
    let second = cpns(&[
        "gateway",
        "--credential",
        s(&w.cred("home-gw")),
        "--server",
        &addr,
        "--pan-listen",
        "127.0.0.1:0",
        "--store",
        &store_arg,
    ])
    .await;
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("stop it first"),
        "{}",
        stderr(&second)
    );
    let again = cpns(&["pn", "show", "--store", &store_arg]).await;
    assert_eq!(stdout(&again), stdout(&shown));

    // The PNE that was not in the PN is still served by the PN GW after all this.
    let mut tv = w.pne("tv").setup("1-1").no_ui().spawn();
    tv.expect_event("pn_joined");
    tv.succeeds();
    let both = cpns(&["pn", "show", "--store", &store_arg]).await;
    assert_eq!(stdout(&both).lines().count(), 2, "{}", stdout(&both));
}
