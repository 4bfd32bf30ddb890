//! Host bindings of the `palisade:policy` WIT package, generated once here and
//! used through the rest of the crate; nothing outside the crate sees them.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

pub(crate) use palisade::policy::types::{
    GroupVersionKind, GroupVersionResource, HostError, Operation, UserInfo,
};
pub(crate) use palisade::policy::{crypto, kubernetes, log, net, oci};

/// The WIT package every policy import lives in.
pub(crate) const PACKAGE: &str = "palisade:policy";
