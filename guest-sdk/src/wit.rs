//! The generated guest bindings of `palisade:policy`. Hidden: policy authors
//! use the wrappers of this crate, and the bindings can change with the WIT
//! package without breaking them.
//!
//! One world per build: a component's type is the union of every world
//! whose bindings it links, so generating both would make every policy
//! owe the exports of both. The `raw` feature picks `raw-policy`; both
//! worlds import the same interfaces, so the host wrappers compile either way.

#[cfg(not(feature = "raw"))]
wit_bindgen::generate!({
    path: "../wit",
    world: "policy",
    runtime_path: "palisade_sdk::__wit_rt",
    pub_export_macro: true,
    export_macro_name: "__export_policy_world",
    default_bindings_module: "palisade_sdk::__wit",
    generate_all,
});

#[cfg(feature = "raw")]
wit_bindgen::generate!({
    path: "../wit",
    world: "raw-policy",
    runtime_path: "palisade_sdk::__wit_rt",
    pub_export_macro: true,
    export_macro_name: "__export_raw_policy_world",
    default_bindings_module: "palisade_sdk::__wit",
    generate_all,
});
