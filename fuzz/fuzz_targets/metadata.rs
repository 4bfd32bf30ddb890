//! Policy metadata: the custom-section reader on any bytes, the author's
//! metadata.yml on any text, and what is written reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::metadata::{read_metadata, write_metadata, PolicyMetadata};

/// The smallest module: the magic number and version.
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

fuzz_target!(|data: &[u8]| {
    let _ = read_metadata(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(metadata) = PolicyMetadata::from_author_text(text) {
            let module =
                write_metadata(EMPTY_MODULE, &metadata).expect("writes into a valid module");
            let read = read_metadata(&module).expect("reads what it wrote");
            assert_eq!(read, Some(metadata));
        }
    }
});
