//! sources.yml and docker config.json: parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::fetch::{DockerCredentials, Sources};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sources) = Sources::parse(text, "fuzz") {
        let _ = sources.is_insecure("registry.example:5000");
        let _ = sources.ca_certificates();
    }
    if let Ok(credentials) = DockerCredentials::parse(text, "fuzz") {
        let _ = credentials.for_registry("registry.example");
    }
});
