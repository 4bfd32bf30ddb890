//! policies.yml: parsing never panics, and what parses is written back as
//! text that parses to the same configuration (the controller writes it,
//! the policy-server reads it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::server::PoliciesConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = PoliciesConfig::parse(text, "fuzz") {
        let written = config.to_text();
        let again = PoliciesConfig::parse(&written, "written")
            .unwrap_or_else(|e| panic!("written text does not parse: {e}\n{written}"));
        assert_eq!(again, config, "{written}");
    }
});
