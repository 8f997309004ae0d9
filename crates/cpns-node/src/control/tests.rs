use super::*;

use tokio::io::AsyncReadExt;

/// A handler that echoes the verb, or refuses an unknown one.
async fn echo(request: Value) -> Value {
    match request.get("verb").and_then(Value::as_str) {
        Some("echo") => json!({ "ok": true, "got": request }),
        Some(other) => error(format!("unknown verb `{other}`")),
        None => error("no verb"),
    }
}

/// A served socket in a fresh directory; dropping the sender stops it.
async fn served() -> (tempfile::TempDir, PathBuf, watch::Sender<bool>) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir.path().join("gw.db"));
    let socket = ControlSocket::bind(&path).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(socket.serve(echo, stopped));
    (dir, path, stop)
}

/// Sends raw bytes on a new connection and reads every answer line until the entity closes.
async fn raw(path: &Path, bytes: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(path).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).await.unwrap();
    all.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

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
    let answers = raw(
        &path,
        b"{\"verb\":\"echo\",\"n\":1}\nnot json\n[1]\n{\"verb\":\"nope\"}\n{\"verb\":\"echo\",\"n\":2}\n",
    )
    .await;
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert_eq!(answers[0]["got"]["n"], 1);
    assert!(
        answers[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("not a JSON request")
    );
    assert_eq!(
        answers[2]["error"],
        "a request is a JSON object with a \"verb\""
    );
    assert_eq!(answers[3]["error"], "unknown verb `nope`");
    assert_eq!(answers[4]["got"]["n"], 2);
    // The client function.
    let answer = request(&path, &json!({ "verb": "echo" })).await.unwrap();
    assert_eq!(answer["ok"], true);
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_connection_closed() {
    let (_dir, path, _stop) = served().await;
    // Far more than the bound: the refusal still arrives (the rest is read and thrown away, so
    // the connection is not reset under the answer).
    let mut big = vec![b' '; 64 * MAX_REQUEST];
    big.extend_from_slice(b"\n{\"verb\":\"echo\"}\n");
    let answers = raw(&path, &big).await;
    assert_eq!(answers.len(), 1, "nothing after the refusal: {answers:?}");
    assert_eq!(
        answers[0]["error"],
        format!("a request is at most {MAX_REQUEST} bytes")
    );
    // The bound is the documented 16 KiB (docs/security.md), and exactly the bound is taken.
    assert_eq!(MAX_REQUEST, 16 * 1024);
    let mut just = b"{\"verb\":\"echo\"}".to_vec();
    just.resize(MAX_REQUEST, b' ');
    just.push(b'\n');
    assert_eq!(raw(&path, &just).await[0]["ok"], true);
    // Others are served all along.
    assert_eq!(raw(&path, b"{\"verb\":\"echo\"}\n").await[0]["ok"], true);
}

/// Asks on an open connection and reads the answer.
async fn ask(s: &mut UnixStream) -> Value {
    s.write_all(b"{\"verb\":\"echo\"}\n").await.unwrap();
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
    waiting.write_all(b"{\"verb\":\"echo\"}\n").await.unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(&mut waiting);
    let unserved = tokio::time::timeout(Duration::from_millis(200), reader.read_line(&mut line));
    assert!(unserved.await.is_err(), "served beyond the bound: {line}");
    // A served connection ends: the waiting one is served.
    drop(held.pop());
    reader.read_line(&mut line).await.unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
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

/// An answer that is not a JSON object on one line (something else listening there) is an
/// error, not an answer.
#[tokio::test]
async fn an_answer_that_is_not_an_object_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        for reply in [&b"[1]\n"[..], b"garbage\n", b""] {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = String::new();
            BufReader::new(&mut s).read_line(&mut line).await.unwrap();
            s.write_all(reply).await.unwrap();
        }
    });
    for _ in 0..3 {
        let err = request(&path, &json!({ "verb": "show" }))
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::BadAnswer(_)), "{err}");
    }
    server.await.unwrap();
}

#[tokio::test]
async fn asking_an_entity_that_is_not_running_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = request(&dir.path().join("gw.db.sock"), &json!({ "verb": "show" }))
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
    let task = tokio::spawn(socket.serve(echo, stopped));
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
    let task = tokio::spawn(socket.serve(echo, stopped));
    // A value that is not `true` does not stop it.
    stop.send(false).unwrap();
    assert_eq!(raw(&path, b"{\"verb\":\"echo\"}\n").await[0]["ok"], true);
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
