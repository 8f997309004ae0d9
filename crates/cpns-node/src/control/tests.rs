//! The socket: typed lines in order, typed refusals of what is not a request, bounds on lines
//! and connections, streams, stale sockets, and strangers (another Unix user) refused.

use super::*;

use cpns_control::Role;
use tokio::io::AsyncReadExt;

/// A handler that answers `show` with no PNs, streams two events on `events`, and refuses the
/// rest as a PN GW would.
async fn stub(request: Request) -> Answer {
    match request {
        Request::Show {} => Answer::One(Ok(Response::Show { pns: Vec::new() })),
        Request::Events {} => {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            for missed in [1, 2] {
                tx.send(Event::Lagged { missed }).await.unwrap();
            }
            Answer::Stream(Response::Events {}, rx)
        }
        other => Role::Gateway.refusal(&other).into(),
    }
}

/// A served socket in a fresh directory; dropping the sender stops it.
async fn served() -> (tempfile::TempDir, PathBuf, watch::Sender<bool>) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir.path().join("gw.db"));
    let socket = ControlSocket::bind(&path).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(socket.serve(stub, stopped));
    (dir, path, stop)
}

/// Sends raw bytes on a new connection and reads every line until the entity closes.
async fn raw(path: &Path, bytes: &[u8]) -> Vec<serde_json::Value> {
    let mut s = UnixStream::connect(path).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).await.unwrap();
    all.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The code of an error answer.
fn code(v: &serde_json::Value) -> &str {
    assert_eq!(v["ok"], false, "{v}");
    v["error"]["code"].as_str().unwrap()
}

const SHOW: &[u8] = b"{\"v\":1,\"verb\":\"show\"}\n";

#[test]
fn the_socket_sits_beside_the_store() {
    assert_eq!(
        socket_path(Path::new("/data/home-gw.db")),
        Path::new("/data/home-gw.db.sock")
    );
}

#[tokio::test]
async fn requests_are_answered_in_order_and_bad_ones_disturb_nothing() {
    let (_dir, path, _stop) = served().await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let lines: &[&[u8]] = &[
        SHOW,
        b"not json\n",
        b"[1]\n",
        b"{\"verb\":\"show\"}\n",
        b"{\"v\":2,\"verb\":\"show\"}\n",
        b"{\"v\":1}\n",
        b"{\"v\":1,\"verb\":\"nope\"}\n",
        b"{\"v\":1,\"verb\":\"members\"}\n",
        b"{\"v\":1,\"verb\":\"members\",\"pn_id\":\"zz\"}\n",
        b"{\"v\":1,\"verb\":\"show\",\"pn_id\":\"00\"}\n",
        b"{\"v\":1,\"verb\":\"join\",\"pn_id\":\"00000000000000000000000000000000\"}\n",
        SHOW,
    ];
    let answers = raw(&path, &lines.concat()).await;
    assert_eq!(answers.len(), lines.len(), "{answers:?}");
    assert_eq!(
        answers[0],
        serde_json::json!({"v":1,"ok":true,"verb":"show","pns":[]})
    );
    let codes: Vec<&str> = answers[1..11].iter().map(code).collect();
    assert_eq!(
        codes,
        [
            "bad_request",         // not JSON
            "bad_request",         // not an object
            "bad_request",         // no version
            "unsupported_version", // another version
            "bad_request",         // no verb
            "unsupported_message", // a verb no version knows
            "bad_request",         // a field missing
            "bad_request",         // a malformed PN id
            "bad_request",         // a field the verb does not take
            "unsupported_message", // a verb of another role
        ]
    );
    assert!(
        answers[10]["error"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("`join` is not a verb of a PN GW"),
        "{}",
        answers[10]
    );
    assert_eq!(answers[11]["ok"], true);
    // The client function.
    let answer = call(&path, &Request::Show {}).await.unwrap();
    assert_eq!(answer, Ok(Response::Show { pns: Vec::new() }));
    let refused = call(&path, &Request::UsageSend {}).await.unwrap();
    assert_eq!(refused.unwrap_err().code, ErrorCode::UnsupportedMessage);
}

#[tokio::test]
async fn a_stream_is_the_answer_then_its_events_until_it_ends() {
    let (_dir, path, _stop) = served().await;
    let lines = raw(&path, b"{\"v\":1,\"verb\":\"events\"}\n").await;
    assert_eq!(
        lines,
        [
            serde_json::json!({"v":1,"ok":true,"verb":"events"}),
            serde_json::json!({"v":1,"event":"lagged","missed":1}),
            serde_json::json!({"v":1,"event":"lagged","missed":2}),
        ]
    );
    let mut seen = Vec::new();
    stream(&path, &Request::Events {}, |line| {
        seen.push(line);
        true
    })
    .await
    .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0], ApiLine::Answer(Ok(Response::Events {})));
    assert_eq!(seen[2], ApiLine::Event(Event::Lagged { missed: 2 }));
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_connection_closed() {
    let (_dir, path, _stop) = served().await;
    // Far more than the bound: the refusal still arrives (the rest is read and thrown away, so
    // the connection is not reset under the answer).
    let mut big = vec![b' '; 64 * MAX_REQUEST];
    big.extend_from_slice(b"\n");
    big.extend_from_slice(SHOW);
    let answers = raw(&path, &big).await;
    assert_eq!(answers.len(), 1, "nothing after the refusal: {answers:?}");
    assert_eq!(code(&answers[0]), "bad_request");
    assert_eq!(
        answers[0]["error"]["reason"],
        format!("a request is at most {MAX_REQUEST} bytes")
    );
    // The bound is the documented 16 KiB (docs/security.md), and exactly the bound is taken.
    assert_eq!(MAX_REQUEST, 16 * 1024);
    let mut just = SHOW.strip_suffix(b"\n").unwrap().to_vec();
    just.resize(MAX_REQUEST, b' ');
    just.push(b'\n');
    assert_eq!(raw(&path, &just).await[0]["ok"], true);
    // Others are served all along.
    assert_eq!(raw(&path, SHOW).await[0]["ok"], true);
}

/// A socket serving another Unix user than this process's: this test process is a stranger
/// to it, refused with `forbidden` before anything it sends is read, and closed.
#[tokio::test]
async fn a_peer_of_another_unix_user_is_refused_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pne.db.sock");
    let socket = ControlSocket::bind(&path).await.unwrap();
    let me = socket.owner();
    assert_eq!(me, std::fs::metadata(dir.path()).unwrap().uid());
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(socket.serving(me + 1).serve(stub, stopped));
    let answers = raw(&path, SHOW).await;
    assert_eq!(answers.len(), 1, "only the refusal: {answers:?}");
    assert_eq!(code(&answers[0]), "forbidden");
    let reason = answers[0]["error"]["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("not uid {me}")), "{reason}");
    let refused = call(&path, &Request::Show {}).await.unwrap().unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
}

/// After its last answer the entity lets a silent peer that keeps its side open linger no
/// longer than it was given (a refused stranger: [`STRANGER_LINGER`], not the idle bound), so
/// such a peer does not hold a connection slot.
#[tokio::test]
async fn a_closing_connection_lingers_no_longer_than_given() {
    assert!(STRANGER_LINGER < IDLE / 10);
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let (read, write) = ours.into_split();
    let linger = Duration::from_millis(100);
    let closed = tokio::time::timeout(IDLE / 3, close_after(read, write, linger)).await;
    assert!(matches!(closed, Ok(Ok(()))), "{closed:?}");
}

/// Asks on an open connection and reads the answer.
async fn ask(s: &mut UnixStream) -> serde_json::Value {
    s.write_all(SHOW).await.unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_for_a_slot() {
    let (_dir, path, _stop) = served().await;
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut s = UnixStream::connect(&path).await.unwrap();
        assert_eq!(ask(&mut s).await["ok"], true);
        held.push(s);
    }
    // One more connects (the backlog takes it) but is not served while all slots are held.
    let mut waiting = UnixStream::connect(&path).await.unwrap();
    waiting.write_all(SHOW).await.unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(&mut waiting);
    let unserved = tokio::time::timeout(Duration::from_millis(200), reader.read_line(&mut line));
    assert!(unserved.await.is_err(), "served beyond the bound: {line}");
    // A served connection ends: the waiting one is served.
    drop(held.pop());
    reader.read_line(&mut line).await.unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["ok"], true);
}

#[tokio::test]
async fn a_running_socket_is_refused_a_stale_one_replaced_and_a_file_left_alone() {
    let (dir, path, stop) = served().await;
    let err = ControlSocket::bind(&path).await.unwrap_err();
    assert!(matches!(err, ControlError::InUse(_)), "{err}");
    assert!(err.to_string().contains("stop it first"), "{err}");

    // A socket nobody answers on (its entity was killed): replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let again = ControlSocket::bind(&stale).await.unwrap();
    assert_eq!(again.path(), stale);
    drop(again);
    assert!(
        !stale.exists(),
        "the socket file is removed with the socket"
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"data").unwrap();
    let err = ControlSocket::bind(&file).await.unwrap_err();
    assert!(matches!(err, ControlError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    drop(stop);
}

/// A socket whose listener is alive but whose backlog is full (connecting says "try again") is
/// not taken for a stale one: it is left in place and the bind fails.
#[tokio::test]
async fn a_socket_with_a_full_backlog_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let listener = UnixListener::bind(&path).unwrap(); // never accepts
    let mut held = Vec::new();
    let full = loop {
        match UnixStream::connect(&path).await {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() < 10_000, "the backlog never filled");
    };
    assert_eq!(full.kind(), io::ErrorKind::WouldBlock, "{full}");
    let err = ControlSocket::bind(&path).await.unwrap_err();
    assert!(matches!(err, ControlError::Io { .. }), "{err}");
    assert!(path.exists());
    drop(listener);
}

/// An answer that is not a line of this version of the API (something else listening there)
/// is an error, not an answer.
#[tokio::test]
async fn an_answer_that_is_not_one_of_this_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let replies: [&[u8]; 5] = [
        b"[1]\n",
        b"garbage\n",
        b"",
        b"{\"ok\":true,\"verb\":\"show\",\"pns\":[]}\n",
        b"{\"v\":1,\"ok\":true,\"verb\":\"show\"}\n",
    ];
    let server = tokio::spawn(async move {
        for reply in replies {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = String::new();
            BufReader::new(&mut s).read_line(&mut line).await.unwrap();
            s.write_all(reply).await.unwrap();
        }
    });
    for _ in replies {
        let err = call(&path, &Request::Show {}).await.unwrap_err();
        assert!(matches!(err, ControlError::BadAnswer { .. }), "{err}");
    }
    server.await.unwrap();
}

#[tokio::test]
async fn asking_an_entity_that_is_not_running_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = call(&dir.path().join("gw.db.sock"), &Request::Show {})
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::NotRunning { .. }), "{err}");
    assert!(err.to_string().contains("start it first"), "{err}");
}

#[tokio::test]
async fn stopping_ends_the_accept_loop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let socket = ControlSocket::bind(&path).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(socket.serve(stub, stopped));
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn dropping_the_stop_sender_ends_the_accept_loop_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let socket = ControlSocket::bind(&path).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(socket.serve(stub, stopped));
    // A value that is not `true` does not stop it.
    stop.send(false).unwrap();
    assert_eq!(raw(&path, SHOW).await[0]["ok"], true);
    drop(stop);
    task.await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn lines_are_read_across_reads_and_bounded() {
    let data: &[u8] = b"ab\ncd";
    let mut r = BufReader::with_capacity(1, data);
    assert_eq!(
        read_line(&mut r, 2).await.unwrap(),
        Line::Whole(b"ab".to_vec())
    );
    assert_eq!(read_line(&mut r, 2).await.unwrap(), Line::End);
    let mut r = BufReader::with_capacity(1, &b"abc\n"[..]);
    assert_eq!(read_line(&mut r, 2).await.unwrap(), Line::TooLong);
    let mut r = BufReader::new(&b"\n"[..]);
    assert_eq!(read_line(&mut r, 0).await.unwrap(), Line::Whole(Vec::new()));
}
