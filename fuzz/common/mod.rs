//! A loopback HTTP/1.1 server for fuzz targets that need a peer (an API
//! server, a registry): it answers every request with what the current
//! fuzz input says, on keep-alive connections so that no socket is left in
//! TIME_WAIT per execution.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer: status, content type, extra headers, body.
#[derive(Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Chooses the answer for a request path.
pub type Router = dyn Fn(&str) -> Answer + Send + Sync;

/// A server on 127.0.0.1 whose routes can be replaced between executions.
pub struct Peer {
    pub addr: SocketAddr,
    router: Arc<Mutex<Arc<Router>>>,
}

impl Peer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let router: Arc<Mutex<Arc<Router>>> =
            Arc::new(Mutex::new(Arc::new(|_: &str| Answer::default())));
        let routes = router.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = routes.clone();
                std::thread::spawn(move || serve(stream, &routes));
            }
        });
        Self { addr, router }
    }

    /// Answers with `router` from now on.
    pub fn route(&self, router: impl Fn(&str) -> Answer + Send + Sync + 'static) {
        *self.router.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(router);
    }
}

fn serve(stream: TcpStream, routes: &Mutex<Arc<Router>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut body_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    body_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; body_length.min(1 << 20)];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let router = routes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let answer = router(&path);
        let status = if (100..600).contains(&answer.status) {
            answer.status
        } else {
            200
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n",
            answer.body.len()
        );
        if !answer.content_type.is_empty() {
            head.push_str(&format!("content-type: {}\r\n", answer.content_type));
        }
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer.body).is_err() {
            return;
        }
    }
}
