//! The generated guest bindings of `palisade:policy`. Hidden: policy authors
//! use the wrappers of this crate, and the bindings can change with the WIT
//! package without breaking them.

wit_bindgen::generate!({
    path: "../wit",
    world: "policy",
    runtime_path: "palisade_sdk::__wit_rt",
    pub_export_macro: true,
    export_macro_name: "__export_policy_world",
    default_bindings_module: "palisade_sdk::__wit",
    generate_all,
});
