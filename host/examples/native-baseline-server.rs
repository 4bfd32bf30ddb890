//! The benchmark's native baseline: the policy-server's HTTP stack (hyper,
//! rustls, the same handlers) serving `pod-privileged` compiled natively
//! from the same source as the component, instead of through WebAssembly.
//!
//! Usage: `native-baseline-server <port> <readiness port> [<cert> <key>]`

use std::time::Duration;

use palisade_host::server::{start_with_set, NativePolicy, PolicySet, ServerOptions, TlsFiles};
use palisade_host::{PolicyRequest, Verdict};
use palisade_sdk::testing::RequestBuilder;
use palisade_sdk::Operation;

#[derive(Debug)]
struct NativePodPrivileged;

impl NativePolicy for NativePodPrivileged {
    fn validate(&self, request: &PolicyRequest) -> Verdict {
        // The same inputs the component gets: metadata and the object's text.
        let operation = match request.operation() {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            _ => Operation::Connect,
        };
        let mut builder = RequestBuilder::new("", "v1", request.kind()).operation(operation);
        if let Some(object) = request.raw_object() {
            builder = builder.raw_object(object);
        }
        let sdk_request = builder.build();
        let response =
            palisade_sdk::dispatch::validate::<pod_privileged::PodPrivileged>(&sdk_request, "{}");
        if response.is_accepted() {
            Verdict::accept()
        } else {
            Verdict::reject(
                response.message().unwrap_or_default(),
                response.code().unwrap_or(400),
            )
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.first().map(|p| p.parse()).transpose()?.unwrap_or(3100);
    let probe: u16 = args.get(1).map(|p| p.parse()).transpose()?.unwrap_or(3101);
    let tls = match (args.get(2), args.get(3)) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }),
        _ => None,
    };
    let dir = tempfile::tempdir()?;
    let policies_file = dir.path().join("policies.yml");
    std::fs::write(&policies_file, "")?;
    let mut set = PolicySet::default();
    set.insert_native("pod-privileged", Box::new(NativePodPrivileged));
    let options = ServerOptions {
        addr: ([127, 0, 0, 1], port).into(),
        readiness_addr: ([127, 0, 0, 1], probe).into(),
        tls,
        cache_dir: None,
        watch_interval: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(5),
        ..ServerOptions::local(policies_file, dir.path())
    };
    let server = start_with_set(options, set).await?;
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
