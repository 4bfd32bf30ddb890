//! A policy's standard error, kept so that a trap can be explained in the
//! policy's own words.
//!
//! A Rust guest prints its panic message to stderr and then traps on
//! `unreachable`; the trap alone says only that, plus a backtrace of mangled
//! std frames. Keeping the last few KiB of stderr (never refusing a write, so
//! a chatty policy is not broken by it) lets the host answer "panicked at
//! src/lib.rs:12:9: index out of bounds" instead.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much of the end of stderr is kept.
const KEPT_BYTES: usize = 4096;
/// The longest explanation taken from stderr when it is not a Rust panic.
const MAX_EXPLANATION: usize = 512;

/// The last [`KEPT_BYTES`] a policy wrote to stderr in one evaluation.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn append(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let newest = bytes.get(bytes.len().saturating_sub(KEPT_BYTES)..);
        kept.extend_from_slice(newest.unwrap_or_default());
        let excess = kept.len().saturating_sub(KEPT_BYTES);
        kept.drain(..excess);
    }

    /// Everything kept, as text.
    pub(crate) fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }

    /// Why the policy stopped, in its own words: a Rust panic's location and
    /// message on one line, else the last lines it wrote; `None` when it
    /// wrote nothing.
    pub(crate) fn explanation(&self) -> Option<String> {
        explain(&self.text())
    }
}

fn explain(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let relevant = match text.rfind("panicked at ") {
        Some(start) => {
            let panic = &text[start..];
            // std's hint about RUST_BACKTRACE follows the message.
            panic.split("\nnote: ").next().unwrap_or(panic)
        }
        None => text,
    };
    let one_line = relevant
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // Keep the end: it is where the reason is.
    let mut start = one_line.len().saturating_sub(MAX_EXPLANATION);
    while !one_line.is_char_boundary(start) {
        start += 1;
    }
    one_line.get(start..).map(str::to_owned)
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always room: older output is dropped instead.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_becomes_one_line_without_the_backtrace_hint() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:12:9:\n\
                      index out of bounds: the len is 0 but the index is 0\n\
                      note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            explain(stderr).as_deref(),
            Some(
                "panicked at src/lib.rs:12:9: index out of bounds: the len is 0 but the index is 0"
            )
        );
    }

    #[test]
    fn other_output_keeps_its_last_part() {
        assert_eq!(explain("  \n"), None);
        assert_eq!(explain("fatal: no\n").as_deref(), Some("fatal: no"));
        let long = format!("{}end", "x".repeat(2000));
        let explained = explain(&long).unwrap();
        assert_eq!(explained.len(), MAX_EXPLANATION);
        assert!(explained.ends_with("end"));
    }

    #[test]
    fn only_the_tail_is_kept_and_writes_never_fail() {
        let mut tail = StderrTail::default();
        for _ in 0..100 {
            OutputStream::write(&mut tail, Bytes::from(vec![b'a'; 1000])).unwrap();
        }
        OutputStream::write(&mut tail, Bytes::from_static(b"last")).unwrap();
        let text = tail.text();
        assert_eq!(text.len(), KEPT_BYTES);
        assert!(text.ends_with("last"));
        assert!(tail.check_write().unwrap() > 0);
    }
}
