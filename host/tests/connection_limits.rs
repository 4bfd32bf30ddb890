//! The policy-server's connection limits, against real sockets: slowloris
//! clients, too many connections, slow bodies, large heads, idle
//! connections, and answers given before the body is read, over HTTP/1.1
//! and HTTP/2.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::time::{Duration, Instant};

use palisade_host::server::{start, RunningServer, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLICIES: &str = "privileged:\n  module: file://{POLICIES}/pod-privileged.wasm\n";

async fn plain_server(
    adjust: impl FnOnce(&mut ServerOptions),
) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policies = common::server::write_policies(dir.path(), POLICIES);
    let mut options = common::server::options(dir.path(), policies);
    adjust(&mut options);
    (start(options).await.unwrap(), dir)
}

fn review() -> Vec<u8> {
    std::fs::read(common::fixture_path("pod-create-privileged.json")).unwrap()
}

/// Whether the server closed `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // an error response first
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_neither_block_others_nor_stay() {
    let (server, _dir) = plain_server(|o| {
        o.connections.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = server.addr;
    // 300 clients that send a request head one byte at a time, slowly.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /validate/privileged HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let dripping = tokio::spawn(async move {
        for _ in 0..5 {
            for stream in &mut slow {
                let _ = stream.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        slow
    });
    // A normal client still gets every answer promptly.
    let client = common::server::plain_client();
    let url = format!("http://{addr}/validate/privileged");
    for _ in 0..20 {
        let started = Instant::now();
        let (status, body) = common::server::post(&client, &url, review()).await;
        assert_eq!(status, 200);
        assert_eq!(body["response"]["allowed"], false);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // The slow clients are cut off at the header deadline.
    let mut slow = dripping.await.unwrap();
    let mut closed = 0;
    for stream in &mut slow {
        if closed_within(stream, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "slowloris connections still open");
    // So is a client that connects and says nothing.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(4)).await);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_service_resumes() {
    let (server, _dir) = plain_server(|o| o.connections.max_connections = 5).await;
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    drop(held);
    let client = common::server::plain_client();
    let url = format!("http://{addr}/validate/privileged");
    common::eventually(10, "a connection slot frees up", || async {
        let response = client.post(&url).body(review()).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_answered_408_and_a_large_head_431() {
    let (server, _dir) = plain_server(|o| {
        o.connections.body_read_timeout = Duration::from_secs(1);
        o.connections.max_header_bytes = 16 << 10;
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /validate/privileged HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .ok();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let big = format!(
        "POST /validate/privileged HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let _ = stream.write_all(big.as_bytes()).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let (server, _dir) =
        plain_server(|o| o.connections.idle_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let body = review();
    let head = format!(
        "POST /validate/privileged HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then idle: closed after about a second.
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(4)).await);
    assert!(started.elapsed() >= Duration::from_millis(800));
    server.shutdown().await;
}

/// 404 for an unknown policy and 413 for a body over the limit, answered
/// before the body is read: every client gets the status, over HTTP/1.1,
/// HTTP/2 without TLS and HTTP/2 over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_always_reach_the_client() {
    let limit = 64 << 10;
    let (plain, _dir) = plain_server(|o| o.max_body_bytes = limit).await;
    let tls = common::server::https_server(POLICIES, |o, _| o.max_body_bytes = limit).await;
    let h1 = common::server::plain_client();
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let h2 = common::server::client_builder(&tls.ca.as_ref().unwrap().pem())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let small = vec![b'x'; 3 << 10];
    let large = vec![b'x'; 1 << 20];
    for (name, client, base) in [
        ("HTTP/1.1", &h1, format!("http://{}", plain.addr)),
        ("HTTP/2", &h2c, format!("http://{}", plain.addr)),
        ("HTTP/2 over TLS", &h2, tls.base.clone()),
    ] {
        for _ in 0..50 {
            let response = client
                .post(format!("{base}/validate/nope"))
                .body(small.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}, unknown policy: {e:?}"));
            assert_eq!(response.status(), 404, "{name}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unknown policy: nope", "{name}");
        }
        for _ in 0..10 {
            let response = client
                .post(format!("{base}/validate/privileged"))
                .body(large.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}, oversized body: {e:?}"));
            assert_eq!(response.status(), 413, "{name}");
        }
        // The connection is still good for a normal request.
        let (status, _) =
            common::server::post(client, &format!("{base}/validate/privileged"), review()).await;
        assert_eq!(status, 200, "{name}");
    }
    plain.shutdown().await;
}

/// An HTTP/2 client that sends its headers and part of its body, then waits
/// for the answer before sending the rest (as a flow-controlled upload of a
/// large body does): the early 404 and 413 must arrive whole, not as a
/// stream reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_answers_arrive_before_the_body_is_sent() {
    let (server, _dir) = plain_server(|o| o.max_body_bytes = 16 << 10).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    for (path, first_chunk, status) in [
        ("/validate/nope", 1 << 10, 404),
        ("/validate/privileged", 32 << 10, 413),
    ] {
        // Each waits out the server's stall bound (half a second).
        for _ in 0..4 {
            client = client.ready().await.unwrap();
            let request = http::Request::post(format!("http://{}{path}", server.addr))
                .body(())
                .unwrap();
            let (response, mut upload) = client.send_request(request, false).unwrap();
            upload.reserve_capacity(first_chunk);
            upload
                .send_data(bytes::Bytes::from(vec![b'x'; first_chunk]), false)
                .unwrap();
            let response = tokio::time::timeout(Duration::from_secs(5), response)
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer while the body is pending"))
                .unwrap_or_else(|e| panic!("{path}: {e:?}"));
            assert_eq!(response.status(), status, "{path}");
            let mut body = response.into_body();
            let mut answer = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap_or_else(|e| panic!("{path}: the answer was cut: {e:?}"));
                let _ = body.flow_control().release_capacity(chunk.len());
                answer.extend_from_slice(&chunk);
            }
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            assert!(answer["error"].is_string(), "{answer}");
        }
    }
    server.shutdown().await;
}

/// curl 7.x reports a stream reset during its upload as "Stream error in
/// the HTTP/2 framing layer", even with NO_ERROR: the early answers must
/// reach it anyway, over HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_early_answers_over_http1_and_http2() {
    let (server, dir) = plain_server(|o| o.max_body_bytes = 64 << 10).await;
    let small = dir.path().join("small.json");
    std::fs::write(&small, vec![b'x'; 3 << 10]).unwrap();
    let large = dir.path().join("large.json");
    std::fs::write(&large, vec![b'x'; 4 << 20]).unwrap();
    let addr = server.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut codes = Vec::new();
        for protocol in ["--http1.1", "--http2-prior-knowledge"] {
            for (path, file, times) in [("nope", &small, 20), ("privileged", &large, 10)] {
                for _ in 0..times {
                    let out = std::process::Command::new("curl")
                        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", protocol])
                        .arg("--data-binary")
                        .arg(format!("@{}", file.display()))
                        .arg(format!("http://{addr}/validate/{path}"))
                        .output()
                        .expect("curl (a prerequisite) runs");
                    codes.push(format!(
                        "{protocol} {path}: {} {}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        codes
    })
    .await
    .unwrap();
    for line in &outcome {
        let expected = if line.contains(" nope:") {
            "404"
        } else {
            "413"
        };
        assert!(
            line.ends_with(&format!(": {expected} ")),
            "{line}\n(all: {outcome:#?})"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_announce_the_stream_limit() {
    let (server, _dir) = plain_server(|o| o.connections.http2_max_concurrent_streams = 7).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    // The server's SETTINGS arrive with its first answer.
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("http://{}/", server.addr))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 404);
    assert_eq!(client.current_max_send_streams(), 7);
    server.shutdown().await;
}
