//! Host bindings of the `palisade:policy` WIT package, generated once here and
//! used through the rest of the crate; nothing outside the crate sees them.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

/// The `raw-policy` world: its own exports, and the very same imports as the
/// `policy` world (one linker and one set of host functions serve both).
pub(crate) mod raw {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "raw-policy",
        with: {
            "palisade:policy/types": crate::bindings::palisade::policy::types,
            "palisade:policy/log": crate::bindings::palisade::policy::log,
            "palisade:policy/kubernetes": crate::bindings::palisade::policy::kubernetes,
            "palisade:policy/oci": crate::bindings::palisade::policy::oci,
            "palisade:policy/net": crate::bindings::palisade::policy::net,
            "palisade:policy/crypto": crate::bindings::palisade::policy::crypto,
        },
    });
}

pub(crate) use palisade::policy::types::{
    GroupVersionKind, GroupVersionResource, HostError, Operation, UserInfo,
};
pub(crate) use palisade::policy::{crypto, kubernetes, log, net, oci};

/// The WIT package every policy import lives in.
pub(crate) const PACKAGE: &str = "palisade:policy";

/// The export that tells a `raw-policy` component from a `policy` one.
pub(crate) const RAW_EXPORT: &str = "validate-raw";
