//! The control API as separate `cpns` processes serve it (docs/control-api.md): every example of
//! the document, in its order, against a running server, PN GW and PNEs, each answer of the
//! shape shown; the Python application of examples/ following a PNE's events and accepting an
//! invitation its PNE holds for it; and a process of another Unix user refused by a PNE's
//! socket on its peer credentials, not only by the file's mode.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::unix_user::{OTHER_USER, ensure_other_user, running_as_root};
use common::{Proc, WAIT, World, json_lines, s};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One fenced example of the document: its info words after `json`, and its lines.
struct Example {
    info: Vec<String>,
    lines: Vec<String>,
}

fn examples() -> Vec<Example> {
    let doc = std::fs::read_to_string(root().join("docs/control-api.md")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<Example> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) if info.starts_with("json") => {
                current = Some(Example {
                    info: info[4..].split_whitespace().map(str::to_string).collect(),
                    lines: Vec::new(),
                });
            }
            (Some(_), Some("")) => out.extend(current.take()),
            (Some(e), _) => e.lines.push(line.to_string()),
            (None, _) => {}
        }
    }
    out
}

/// A PN id as the document and the entities write it.
fn is_pn_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `live` has the shape of `doc`: every key it has is documented, with a value of the same
/// JSON type (a documented `null` or empty list takes anything), recursively; what the
/// document leaves out may not appear. PN ids the document shows are learnt as the live ones
/// (`ids`), so later requests name the PNs that exist.
fn same_shape(doc: &Value, live: &Value, at: &str, ids: &mut BTreeMap<String, String>) {
    match (doc, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, lv) in l {
                let dv = d
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} is not documented: {live}"));
                same_shape(dv, lv, &format!("{at}.{k}"), ids);
            }
        }
        (Value::Array(d), Value::Array(l)) => {
            // The document's elements together show what an element may have.
            let Some(first) = d.first() else { return };
            let mut widest = first.clone();
            for other in &d[1..] {
                if let (Value::Object(w), Value::Object(o)) = (&mut widest, other) {
                    for (k, v) in o {
                        w.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
            for (i, lv) in l.iter().enumerate() {
                same_shape(&widest, lv, &format!("{at}[{i}]"), ids);
            }
        }
        (Value::String(d), Value::String(l)) => {
            if is_pn_id(d) && is_pn_id(l) {
                ids.entry(d.clone()).or_insert_with(|| l.clone());
            }
        }
        (Value::Null, _) => {}
        (Value::Number(_), Value::Number(_)) | (Value::Bool(_), Value::Bool(_)) => {}
        _ => panic!("{at}: {live} where the document shows {doc}"),
    }
}

/// A use a request reports, moved to end now (the server takes uses of the last 30 days):
/// `start_s` and `end_s` keep their distance.
fn recent(request: &str) -> String {
    let mut v: Value = serde_json::from_str(request).unwrap();
    if let (Some(start), Some(end)) = (v["start_s"].as_u64(), v["end_s"].as_u64()) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        v["start_s"] = (now - (end - start)).into();
        v["end_s"] = now.into();
        // The order of the fields stays the document's.
        return request
            .replace(
                &format!("\"start_s\":{start}"),
                &format!("\"start_s\":{}", v["start_s"]),
            )
            .replace(
                &format!("\"end_s\":{end}"),
                &format!("\"end_s\":{}", v["end_s"]),
            );
    }
    request.to_string()
}

/// Sends `request` on a new connection to `socket` and reads `count` lines.
fn exchange(socket: &Path, request: &str, count: usize) -> Vec<String> {
    let mut stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    (0..count)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "{request}: closed before {count} lines");
            line
        })
        .collect()
}

/// The world of the document's examples: the server (charging `game`), the PN GW `home-gw`,
/// and alice's PNEs `phone`, `tv`, `speaker` (accepting invitations) and `watch` (asking its
/// application), each staying, each known to the PN GW.
fn documented_world() -> (World, Vec<Proc>) {
    let pnes = ["phone", "tv", "speaker", "watch"];
    let mut w = World::builder()
        .gateway("home-gw")
        .pnes(&pnes)
        .server_args(&["--chargeable", "game=3"])
        .start();
    let mut procs = Vec::new();
    for id in pnes {
        let run = w.pne(id).stay();
        let run = if id == "watch" {
            run.args(&["--invitations", "ask"])
        } else {
            run
        };
        let mut p = run.spawn();
        p.expect_event("discovered");
        w.gw()
            .expect_event_where("pne_discovered", |v| v["pne"] == id);
        procs.push(p);
    }
    (w, procs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_examples_run_against_running_entities() {
    let (w, mut pnes) = documented_world();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut ran = 0;
    for ex in examples() {
        if ex.info.iter().any(|i| i == "static") {
            continue;
        }
        let socket = match ex.info.first().map(String::as_str) {
            Some("pne") => PathBuf::from(format!("{}.sock", s(&w.store(&ex.info[1])))),
            Some("gateway") => PathBuf::from(format!("{}.sock", s(&w.store("home-gw")))),
            Some("server") => w.data_dir().join("server.sock"),
            other => panic!("an example for no role: {other:?}"),
        };
        let mut request = ex.lines[0].clone();
        for (doc, live) in &ids {
            request = request.replace(doc.as_str(), live);
        }
        let request = recent(&request);
        // A stream's events come when something happens: only its answer is read.
        let stream = ex.info.iter().any(|i| i == "stream");
        let count = if stream { 1 } else { ex.lines.len() - 1 };
        let got = exchange(&socket, &request, count);
        for (doc, live) in ex.lines[1..].iter().zip(&got) {
            let d: Value = serde_json::from_str(doc).unwrap();
            let l: Value = serde_json::from_str(live).unwrap();
            let what = format!("{:?} {request}: {live}", ex.info);
            assert_eq!(l["v"], 1, "{what}");
            assert_eq!(l["ok"], d["ok"], "{what}");
            assert_eq!(l["verb"], d["verb"], "{what}");
            assert_eq!(l["event"], d["event"], "{what}");
            assert_eq!(l["error"]["code"], d["error"]["code"], "{what}");
            same_shape(&d, &l, "", &mut ids);
        }
        ran += 1;
    }
    assert!(ran > 40, "{ran} examples ran");
    // Both PNs of the story were made, and are gone again from the server, the PN GW and the
    // members that were told on a link proven with a LocalEUKey (the tv of both PNs, the
    // speaker of the PN GW's). The speaker first entered the phone's PN by invitation, on a
    // link no LocalEUKey proved, and a PNE takes a notice of expulsion only from a PN GW its
    // link proved (cpns-proto, pne/release.rs `sent_by_pns_gateway`): its own store is not
    // checked for that PN.
    assert_eq!(ids.len(), 4, "two PNs and two service groups: {ids:?}");
    // The service groups were deleted: no device holds a key of one any more.
    for pne in ["phone", "tv", "speaker"] {
        let socket = PathBuf::from(format!("{}.sock", s(&w.store(pne))));
        let held = exchange(&socket, r#"{"v":1,"verb":"groups"}"#, 1);
        let held: Value = serde_json::from_str(&held[0]).unwrap();
        assert_eq!(held["groups"], serde_json::json!([]), "{pne}: {held}");
    }
    let a = ids["3f2a8e0d5b7c4a19b6e2d0f1a9c3e7c1"].clone();
    let b = ids["9b1c44e07f2d4a6c8e5b3a1d0f9e8c7b"].clone();
    let [_, tv, speaker, _] = &mut pnes[..] else {
        unreachable!()
    };
    tv.expect_event_where("pn_released", |v| v["pn_id"] == a.as_str());
    tv.expect_event_where("expelled", |v| v["pn_id"] == b.as_str());
    speaker.expect_event_where("pn_released", |v| v["pn_id"] == b.as_str());
    let stores = w.stores().await;
    assert!(stores.server.is_empty(), "{stores:?}");
    for id in ["home-gw", "phone", "tv", "watch"] {
        assert!(stores.at(id).is_empty(), "{id}: {stores:?}");
    }
    assert!(!stores.at("speaker").contains_key(&b), "{stores:?}");
}

/// The Python application follows only the document: it lists the phone's PNs, follows its
/// events, and accepts the invitation the phone (`--invitations ask`) holds for it when the
/// watch asks for a PN with it; the phone joins and every store agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_application_accepts_an_invitation_its_pne_holds() {
    let mut w = World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "watch"])
        .start();
    let mut phone = w
        .pne("phone")
        .stay()
        .args(&["--invitations", "ask"])
        .spawn();
    phone.expect_event("discovered");
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "phone");
    let socket = format!("{}.sock", s(&w.store("phone")));
    let mut app = Command::new("python3")
        .arg(root().join("examples/pne_app.py"))
        .args(["--socket", &socket, "--timeout", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3, to run examples/pne_app.py");
    let mut out = BufReader::new(app.stdout.take().unwrap()).lines();
    let mut next = || out.next().expect("the application ended early").unwrap();
    assert_eq!(next(), "PNE phone");
    assert_eq!(next(), "no PNs");
    assert_eq!(next(), "following events");
    // The watch asks for a PN with the phone; the phone holds the invitation for its
    // application, which accepts.
    let mut watch = w.pne("watch").setup("phone").spawn();
    let joined = watch.expect_event("pn_joined");
    let pn = joined["pn_id"].as_str().unwrap().to_string();
    assert_eq!(next(), format!("invited to PN {pn} by watch"));
    assert_eq!(next(), format!("accepted PN {pn}"));
    assert_eq!(next(), format!("joined PN {pn}"));
    let listed = next();
    assert!(
        listed.starts_with(&format!("PN {pn} at home-gw: ")),
        "{listed}"
    );
    assert!(
        listed.contains("phone") && listed.contains("watch"),
        "{listed}"
    );
    assert!(app.wait().unwrap().success());
    watch.succeeds();
    phone.expect_event_where("invited", |v| v["pn_id"] == pn.as_str());
    let stores = w.stores().await;
    stores.agree();
    assert_eq!(
        stores.at("phone"),
        common::members(&[(pn.as_str(), &["phone", "watch"][..])])
    );
}

/// Sends `line` to `socket` as `user` (with `runuser` and `socat`) and returns what came back
/// and the exit status's success.
fn as_user(user: &str, socket: &str, line: &str) -> (String, bool) {
    let mut child = Command::new("runuser")
        .args([
            "-u",
            user,
            "--",
            "socat",
            "-t",
            "10",
            "-",
            &format!("UNIX-CONNECT:{socket}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runuser and socat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// Another Unix user may not use a PNE's socket: the file's mode keeps it out, and with the
/// mode opened up (an administrator's mistake) the PNE still refuses it on its peer
/// credentials (`forbidden`) and closes, while its own user is served all along. Needs root
/// (to make the second user and run as it); skipped with a message otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_unix_user_is_refused_by_the_pnes_socket() {
    let w = World::builder().gateway("home-gw").pne("phone").start();
    if !running_as_root(&w.path("")) {
        eprintln!("skipped: run as root to test a second Unix user against the PNE's socket");
        return;
    }
    ensure_other_user();
    let mut phone = w.pne("phone").stay().spawn();
    phone.expect_event("discovered");
    let socket = format!("{}.sock", s(&w.store("phone")));
    let show = r#"{"v":1,"verb":"show"}"#;

    // The directory and the socket's mode keep the other user out.
    let dir = w.path("");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (out, _) = as_user(OTHER_USER, &socket, show);
    assert!(out.is_empty(), "served through mode 0600: {out}");

    // Opened up, the socket still refuses it, on its credentials, and closes.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (out, ok) = as_user(OTHER_USER, &socket, show);
    assert!(ok, "socat ended badly: {out}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "only the refusal: {out}");
    assert_eq!(lines[0]["ok"], false);
    assert_eq!(lines[0]["error"]["code"], "forbidden", "{out}");

    // Its own user is served.
    let own = exchange(Path::new(&socket), show, 1);
    let answer: Value = serde_json::from_str(&own[0]).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["verb"], "show");
}

/// `cpns pn` is a client of the same verbs: a PN set up and a registration on a running PNE,
/// a PN GW-initiated establishment waited for, the invitation a PNE holds for its application
/// answered (once: a second answer finds nothing), and the PNE's events followed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sets_up_registers_establishes_and_answers() {
    let mut w = World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "tv", "watch"])
        .start();
    let mut pnes = Vec::new();
    for id in ["phone", "tv", "watch"] {
        let run = w.pne(id).stay();
        let run = if id == "watch" {
            run.args(&["--invitations", "ask", "--ask-within-s", "50"])
        } else {
            run
        };
        let mut p = run.spawn();
        p.expect_event("discovered");
        w.gw()
            .expect_event_where("pne_discovered", |v| v["pne"] == id);
        pnes.push(p);
    }
    let store = |id: &str| w.store(id).to_string_lossy().into_owned();
    let (phone, gw, watch) = (store("phone"), store("home-gw"), store("watch"));

    let set_up = common::cpns(&["pn", "setup", "tv", "--store", &phone]);
    let pn = set_up
        .strip_prefix("set up PN ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{set_up}"))
        .to_string();
    assert_eq!(set_up, format!("set up PN {pn} at home-gw: phone, tv\n"));
    let registered = common::cpns(&["pn", "register", "--store", &phone]);
    assert!(
        registered.starts_with("registered as cpns-") && registered.contains(&pn),
        "{registered}"
    );

    // The watch's application follows it; the PN GW establishes a PN with it, which it holds.
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut events = Proc::start(
        "pne",
        "events",
        &args(&["pn", "events", "--store", &watch]),
        "warn",
    );
    events.expect_line("following");
    let mut establishing = Proc::start(
        "gateway",
        "establish",
        &args(&["pn", "establish", "watch", "--wait", "--store", &gw]),
        "warn",
    );
    let started = establishing.expect_line("establishing PN ");
    let other = started["establishing PN ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    events.expect_line(&format!("invited to PN {other} by home-gw"));
    let answered = common::cpns(&["pn", "answer", &other, "accept", "--store", &watch]);
    assert_eq!(answered, format!("accepted the invitation to PN {other}\n"));
    events.expect_line(&format!("joined PN {other} at home-gw: watch"));
    let ended = establishing.expect_line("pn_establishment");
    assert!(
        ended.ends_with(&format!("ended: PN {other} at home-gw: watch")),
        "{ended}"
    );
    establishing.succeeds();
    let again = common::run(&["pn", "answer", &other, "accept", "--store", &watch]);
    assert!(!again.status.success());
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("refused: not_found: "), "{why}");

    let stores = w.stores().await;
    stores.agree();
    assert_eq!(
        stores.at_server(),
        common::members(&[
            (pn.as_str(), &["phone", "tv"][..]),
            (other.as_str(), &["watch"][..]),
        ])
    );
}
