//! A registry's answers into the fetcher: a loopback registry serves a
//! fuzzed manifest (under a fuzzed media type, with or without a matching
//! `Docker-Content-Digest`) and a fuzzed blob, and the fetcher pulls a policy
//! from it through oci-client. The pull ends with a stored module whose
//! SHA-256 is the one the manifest names, or with an error; never a panic.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_host::fetch::{Fetcher, FetcherOptions, Sources};
use palisade_host::module_digest;

const MEDIA_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
    "text/plain",
];

struct Setup {
    fetcher: Fetcher,
    registry: common::Peer,
    store: std::path::PathBuf,
    runtime: tokio::runtime::Runtime,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let registry = common::Peer::start();
        let store = std::env::temp_dir().join(format!("palisade-fuzz-oci-{}", std::process::id()));
        let fetcher = Fetcher::new(FetcherOptions {
            store_dir: store.clone(),
            sources: Sources {
                insecure_sources: vec![registry.addr.to_string()],
                ..Sources::default()
            },
            max_module_bytes: Some(1 << 20),
            ..FetcherOptions::default()
        })
        .expect("a fetcher");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Setup {
            fetcher,
            registry,
            store,
            runtime,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    // flags, manifest length (2 bytes), manifest, blob
    let [flags, low, high, rest @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*low, *high])).min(rest.len());
    let (manifest, blob) = rest.split_at(split);
    let media_type = MEDIA_TYPES[usize::from(flags % 8).min(MEDIA_TYPES.len() - 1)];
    let manifest_digest = format!("sha256:{}", module_digest(manifest));
    let send_digest = flags & 0x10 != 0;
    let blob_status = if flags & 0x20 != 0 { 500 } else { 200 };
    let (manifest, blob) = (manifest.to_vec(), blob.to_vec());
    setup.registry.route(move |path| {
        if path == "/v2/" {
            common::Answer {
                status: 200,
                content_type: "application/json".into(),
                body: b"{}".to_vec(),
                ..common::Answer::default()
            }
        } else if path.contains("/manifests/") {
            common::Answer {
                status: 200,
                content_type: media_type.into(),
                headers: if send_digest {
                    vec![("docker-content-digest".into(), manifest_digest.clone())]
                } else {
                    Vec::new()
                },
                body: manifest.clone(),
            }
        } else if path.contains("/blobs/") {
            common::Answer {
                status: blob_status,
                content_type: "application/octet-stream".into(),
                body: blob.clone(),
                ..common::Answer::default()
            }
        } else {
            common::Answer {
                status: 404,
                ..common::Answer::default()
            }
        }
    });
    let reference = format!("registry://{}/fuzz/policy:v1", setup.registry.addr);
    let fetched = setup.runtime.block_on(setup.fetcher.fetch(&reference));
    if let Ok(module) = fetched {
        let bytes = std::fs::read(&module.path).expect("a fetched module is stored");
        assert_eq!(
            module.digest.as_deref(),
            Some(module_digest(&bytes).as_str()),
            "a stored module matches its digest"
        );
    }
    // Nothing carries over to the next execution.
    for sub in ["sha256", "manifests"] {
        if let Ok(entries) = std::fs::read_dir(setup.store.join(sub)) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
});
