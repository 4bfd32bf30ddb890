//! Raw bytes into the policy-server's HTTP layer, over a real loopback
//! connection: the client writes the input and closes its side; the server
//! answers or closes, and never panics (a panic in any thread aborts the
//! fuzzer). One policy (`accept`, fuzz/guest/accept_all.wat) is served, so
//! well-formed reviews reach an evaluation.
#![no_main]
// No TIME_WAIT per execution: a closed client socket is reset instead.
#![feature(tcp_linger)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use palisade_host::server::{start, ConnectionLimits, ServerOptions};

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let dir = std::env::temp_dir().join("palisade-fuzz-http");
        std::fs::create_dir_all(&dir).expect("a work directory");
        let wasm =
            wat::parse_str(include_str!("../guest/accept_all.wat")).expect("the policy assembles");
        std::fs::write(dir.join("accept.wasm"), wasm).expect("the policy is written");
        let policies = dir.join("policies.yml");
        std::fs::write(
            &policies,
            format!(
                "accept:\n  module: file://{}\n",
                dir.join("accept.wasm").display()
            ),
        )
        .expect("policies.yml is written");
        let mut options = ServerOptions {
            workers: 2,
            cache_dir: None,
            always_accept_namespace: Some("kube-system".into()),
            max_body_bytes: 64 << 10,
            watch_interval: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(1),
            kubewarden_metrics: true,
            connections: ConnectionLimits {
                header_read_timeout: Duration::from_secs(2),
                body_read_timeout: Duration::from_secs(1),
                ..ConnectionLimits::default()
            },
            ..ServerOptions::local(policies, &dir)
        };
        options.load.memory_bytes = 64 << 20;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let server = start(options).await.expect("the server starts");
                sender.send(server.addr).expect("the address is taken");
                std::future::pending::<()>().await;
            });
        });
        receiver.recv().expect("the server reports its address")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut stream) = TcpStream::connect(server()) else {
        return;
    };
    let _ = stream.set_linger(Some(Duration::ZERO));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(data);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
});
