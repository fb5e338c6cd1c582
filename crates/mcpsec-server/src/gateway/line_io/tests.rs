//! The upstream line I/O's tests: the direct call path, the writer queue, ends of the line.
use super::*;
use rmcp::model::{JsonRpcMessage, ServerNotification};

/// An upstream that runs `script` under `sh`.
fn upstream(script: &str) -> (UpstreamTransport, Arc<Direct>) {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    UpstreamTransport::spawn(cmd).unwrap()
}

fn call(direct: &Arc<Direct>, timeout: Duration) -> tokio::task::JoinHandle<Result<Answer, NoAnswer>> {
    let direct = direct.clone();
    tokio::spawn(async move { direct.call("echo", JsonObject::new(), timeout).await })
}

/// The text of the call's answer, which must arrive before anything
/// more reaches rmcp.
async fn answered_text(
    pending: tokio::task::JoinHandle<Result<Answer, NoAnswer>>,
    t: &mut UpstreamTransport,
) -> String {
    let answer = tokio::select! {
        a = pending => a.unwrap(),
        msg = t.receive() => panic!("rmcp got a message before the call's answer: {msg:?}"),
    };
    match answer {
        Ok(Answer::Result(r)) => serde_json::to_value(&r.content).unwrap()[0]["text"].as_str().unwrap().to_owned(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_answer_reaches_its_call_once_and_everything_else_goes_to_rmcp_or_nowhere() {
    let (mut t, direct) = upstream(
        r#"read -r req; case "$req" in *'"id":"mcpsec-1"'*) ;; *) exit 3;; esac
        printf '%s\n' 'not json' '{"jsonrpc":"2.0","id":"mcpsec-77","result":{"content":[]}}' \
          '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}' \
          '{"jsonrpc":"2.0","id":"mcpsec-1","result":{"content":[{"type":"text","text":"hi"}]}}' \
          '{"jsonrpc":"2.0","id":"mcpsec-1","result":{"content":[{"type":"text","text":"again"}]}}'
        read -r rest"#,
    );
    let pending = call(&direct, Duration::from_secs(10));
    // The line that is not JSON and the answer nobody waits for are
    // dropped; the notification is rmcp's.
    let msg = t.receive().await.expect("the notification");
    assert!(
        matches!(msg, JsonRpcMessage::Notification(ref n) if matches!(n.notification, ServerNotification::ToolListChangedNotification(_))),
        "{msg:?}"
    );
    assert_eq!(answered_text(pending, &mut t).await, "hi");
    assert!(direct.calls().waiting.is_empty(), "nobody waits any more");
    t.close().await.unwrap();
}

#[tokio::test]
async fn a_line_over_the_limit_is_dropped_whole_and_the_next_answer_still_arrives() {
    // A hostile upstream writes a 17 MiB line that would answer our call,
    // then the real answer: the first is dropped without being kept, and
    // the call gets the second.
    let (mut t, direct) = upstream(&format!(
        r#"read -r req
        {{ printf '{{"jsonrpc":"2.0","id":"mcpsec-1","result":{{"content":[{{"type":"text","text":"'
           head -c {} /dev/zero | tr '\0' a; printf '"}}]}}}}\n'; }}
        printf '%s\n' '{{"jsonrpc":"2.0","id":"mcpsec-1","result":{{"content":[{{"type":"text","text":"ok"}}]}}}}'
        read -r rest"#,
        MAX_UPSTREAM_LINE + (1 << 20)
    ));
    let pending = call(&direct, Duration::from_secs(30));
    assert_eq!(answered_text(pending, &mut t).await, "ok");
    assert!(t.lines.line().is_empty(), "the long line was not kept");
    t.close().await.unwrap();
}

#[tokio::test]
async fn errors_and_malformed_answers_are_told_apart() {
    let (mut t, direct) = upstream(
        r#"read -r a; read -r b
        printf '%s\n' '{"jsonrpc":"2.0","id":"mcpsec-1","error":{"code":-32602,"message":"no such tool"}}' \
          '{"jsonrpc":"2.0","id":"mcpsec-2","result":{"content":"not a list"}}'
        read -r rest"#,
    );
    let (first, second) = (call(&direct, Duration::from_secs(10)), call(&direct, Duration::from_secs(10)));
    let receiving = async {
        let _ = t.receive().await;
    };
    let both = async { (first.await.unwrap(), second.await.unwrap()) };
    let (a, b) = tokio::select! {
        r = both => r,
        () = receiving => panic!("the upstream's output ended"),
    };
    assert!(matches!(a, Ok(Answer::Error(ref e)) if e.message == "no such tool"), "{a:?}");
    assert!(matches!(b, Ok(Answer::Malformed(_))), "{b:?}");
}

#[tokio::test]
async fn a_call_waiting_when_the_upstream_exits_learns_it_and_later_calls_are_refused() {
    let (mut t, direct) = upstream("read -r req; exit 0");
    let pending = call(&direct, Duration::from_secs(10));
    assert!(t.receive().await.is_none(), "the output ended");
    assert!(matches!(pending.await.unwrap(), Err(NoAnswer::Closed(_))));
    assert!(matches!(call(&direct, Duration::from_secs(10)).await.unwrap(), Err(NoAnswer::Closed(_))));
}

#[test]
fn only_ids_written_exactly_as_ours_are_ours() {
    assert_eq!(our_number("mcpsec-1"), Some(1));
    assert_eq!(our_number("mcpsec-4242"), Some(4242));
    for other in ["mcpsec-", "mcpsec-01", "mcpsec-+1", "mcpsec--1", "mcpsec-1a", "mcpsec-1 ", "x-1", "1"] {
        assert_eq!(our_number(other), None, "{other}");
    }
    let id = |line: &str| peek(line.as_bytes()).and_then(|p| p.id?.0);
    assert_eq!(id(r#" {"id":"mcpsec-3","result":{}}"#), Some(3));
    assert_eq!(id(r#"{"id":3,"result":{}}"#), None);
    assert_eq!(id(r#"{"id":["mcpsec-3",{"a":[1,2]}],"result":{}}"#), None);
    assert_eq!(id(r#"["mcpsec-3"]"#), None, "not an object: rmcp's to parse");
}

#[tokio::test]
async fn an_upstream_that_stops_reading_cannot_hold_a_call_or_its_own_shutdown() {
    // Never reads: the pipe fills and the request cannot be written.
    let (mut t, direct) = upstream("exec sleep 30");
    let mut args = JsonObject::new();
    args.insert("blob".into(), "x".repeat(1 << 20).into());
    let started = std::time::Instant::now();
    let answer = direct.call("echo", args, Duration::from_millis(300)).await;
    assert!(matches!(answer, Err(NoAnswer::TimedOut)), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the timeout covers the write: {:?}", started.elapsed());
    // The writer is still stuck on the full pipe; closing kills the child anyway.
    let started = std::time::Instant::now();
    t.close().await.unwrap();
    assert!(started.elapsed() < EXIT_GRACE + Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_call_that_times_out_is_cancelled_upstream() {
    // The upstream echoes the second line it reads: the cancellation.
    let (mut t, direct) = upstream("read -r req; read -r note; printf '%s\\n' \"$note\"; read -r rest");
    let answer = call(&direct, Duration::from_millis(100)).await.unwrap();
    assert!(matches!(answer, Err(NoAnswer::TimedOut)), "{answer:?}");
    let msg = t.receive().await.expect("the echoed cancellation");
    let JsonRpcMessage::Notification(n) = msg else { panic!("{msg:?}") };
    let ServerNotification::CancelledNotification(c) = n.notification else { panic!("{:?}", n.notification) };
    assert_eq!(c.params.request_id, Some(rmcp::model::NumberOrString::String("mcpsec-1".into())));
    assert!(direct.calls().waiting.is_empty());
}

/// The text of a queued message.
fn text(out: Out) -> String {
    match out {
        Out::Request(_, b) | Out::Line(b) => String::from_utf8(b).unwrap(),
        Out::Close => "close".into(),
    }
}

#[tokio::test]
async fn a_cancellation_is_queued_behind_the_request_it_cancels() {
    // No writer: the queue is read here, in order.
    let (direct, mut queue) = Direct::new();
    let pending = call(&direct, Duration::from_secs(30));
    tokio::task::yield_now().await;
    // As the writer task would: take the request (it is sent), then the
    // call goes away.
    let request = queue.try_recv().unwrap();
    assert!(matches!(request, Out::Request(1, _)));
    assert!(direct.take_request(1));
    pending.abort();
    let _ = pending.await;
    let note = text(queue.try_recv().expect("a cancellation"));
    assert!(note.contains("notifications/cancelled") && note.contains("\"mcpsec-1\""), "{note}");
    assert!(text(request).contains("\"id\":\"mcpsec-1\""));
    assert!(queue.try_recv().is_err(), "nothing else");
}

#[tokio::test]
async fn a_request_whose_call_stopped_waiting_before_it_was_written_is_never_written() {
    let (direct, queue) = Direct::new();
    // Call 1 times out while its request is still queued (no writer yet).
    let gone = call(&direct, Duration::from_millis(1)).await.unwrap();
    assert!(matches!(gone, Err(NoAnswer::TimedOut)), "{gone:?}");
    let waiting = call(&direct, Duration::from_secs(30));
    tokio::task::yield_now().await;
    // Now the writer runs, into a pipe read here.
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let writer = tokio::spawn(write_out(theirs, queue, Arc::downgrade(&direct), direct.stop.clone()));
    let mut lines = tokio::io::BufReader::new(ours);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await.unwrap();
    assert!(line.contains("\"id\":\"mcpsec-2\""), "call 1's request and its cancellation are left out: {line}");
    assert_eq!(direct.queued.load(Ordering::Acquire), 0, "every byte taken is given back");
    // Stopping the writer closes the pipe: nothing else was written.
    direct.stop.notify_one();
    writer.await.unwrap();
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut lines, &mut rest).await.unwrap();
    assert_eq!(rest, "");
    waiting.abort();
}

#[tokio::test]
#[allow(clippy::disallowed_methods)] // reads /proc to see the child gone, not a tool's file
async fn a_transport_dropped_without_close_ends_its_calls_and_its_child() {
    let tmp = tempfile::tempdir().unwrap();
    let read = tmp.path().join("read");
    let (t, direct) = upstream(&format!("read -r req; : > '{}'; exec sleep 30", read.display()));
    let pid = t.child.as_ref().and_then(Child::id).expect("a pid");
    let pending = call(&direct, Duration::from_secs(30));
    // The request is written and read: the upstream says so in a file.
    let seen = async {
        while !read.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), seen).await.expect("the upstream never read the request");
    drop(t);
    let answer = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("answered at once").unwrap();
    assert!(matches!(answer, Err(NoAnswer::Closed(_))), "{answer:?}");
    assert!(direct.ended());
    assert!(matches!(call(&direct, Duration::from_secs(1)).await.unwrap(), Err(NoAnswer::Closed(_))));
    // The writer task stopped (its end of the queue is gone).
    let started = std::time::Instant::now();
    while !direct.out.is_closed() {
        assert!(started.elapsed() < Duration::from_secs(5), "the writer task still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed: gone, or a zombie until tokio reaps it.
    let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    };
    let started = std::time::Instant::now();
    while !gone() {
        assert!(started.elapsed() < Duration::from_secs(5), "the child {pid} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_upstream_that_leaves_the_queue_full_has_its_session_ended_at_once() {
    // Never reads: the first request fills the pipe, the writer task is
    // stuck, and the queue fills behind it.
    let (mut t, direct) = upstream("exec sleep 30");
    let mut args = JsonObject::new();
    args.insert("blob".into(), "x".repeat(1 << 20).into());
    let stuck = {
        let direct = direct.clone();
        tokio::spawn(async move { direct.call("echo", args, Duration::from_secs(30)).await })
    };
    tokio::task::yield_now().await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..QUEUE + 8).map(|_| call(&direct, Duration::from_secs(30))).collect();
    let mut backlog = 0;
    for c in calls {
        match c.await.unwrap() {
            Err(NoAnswer::Backlog) => backlog += 1,
            Err(NoAnswer::Closed(why)) => assert_eq!(why, STOPPED_READING),
            other => panic!("{other:?}"),
        }
    }
    // The first call that found the queue full ended the session: every
    // call waiting learnt it, and the later ones were refused.
    assert_eq!(backlog, 1);
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not after the timeout: {:?}", started.elapsed());
    assert!(matches!(stuck.await.unwrap(), Err(NoAnswer::Closed(_))));
    assert!(direct.ended());
    t.close().await.unwrap();
}

#[test]
fn the_queue_is_bounded_in_bytes_too_but_takes_one_message_of_any_size() {
    let (direct, _queue) = Direct::new();
    assert!(direct.queue(Out::Line(Vec::new()), QUEUE_BYTES + 1).is_ok(), "alone in the queue");
    assert!(matches!(direct.queue(Out::Line(Vec::new()), 1), Err(Full::Backlog)));
    assert_eq!(direct.queued.load(Ordering::Acquire), QUEUE_BYTES + 1, "a refused message is not counted");
}
