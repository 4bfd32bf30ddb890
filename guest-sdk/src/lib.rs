//! Write Kubernetes admission policies for Palisade in Rust.
//!
//! A policy is a type implementing [`Policy`], exported with
//! [`export_policy!`] and built with `cargo component build --release`:
//!
//! ```
//! use palisade_sdk::{accept, export_policy, reject, NoSettings, Policy, Request, Response};
//!
//! struct DenyDefaultNamespace;
//!
//! impl Policy for DenyDefaultNamespace {
//!     type Settings = NoSettings;
//!
//!     fn validate(request: &Request, _: &NoSettings) -> palisade_sdk::Result<Response> {
//!         Ok(match request.namespace.as_deref() {
//!             Some("default") => reject("use a team namespace, not `default`", 403),
//!             _ => accept(),
//!         })
//!     }
//! }
//!
//! export_policy!(DenyDefaultNamespace);
//! # fn main() {}
//! ```
//!
//! The same type is unit-tested natively with plain `cargo test`, through
//! the harness in `palisade_sdk::testing` (enable the `testing` feature in
//! `[dev-dependencies]` so it stays out of the policy binary).
//!
//! A raw policy, which decides on any JSON document POSTed to
//! `/validate_raw` rather than on Kubernetes requests, implements
//! [`RawPolicy`] and is exported with [`export_raw_policy!`] (enable the
//! `raw` feature).
//!
//! Crate features: `k8s` re-exports typed Kubernetes objects
//! (k8s-openapi) as [`k8s`]; `testing` adds the native test harness; `raw`
//! builds a raw policy (the `raw-policy` world) instead of a Kubernetes one.

#[doc(hidden)]
pub mod dispatch;
pub mod host;
pub mod log;
// Lets the generated bindings name this crate by its public path from inside it too.
extern crate self as palisade_sdk;

mod request;
mod response;
mod settings;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[path = "wit.rs"]
pub mod __wit;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use wit_bindgen::rt as __wit_rt;

/// Typed Kubernetes objects (`k8s::api::core::v1::Pod`...), from k8s-openapi.
#[cfg(feature = "k8s")]
pub use k8s_openapi as k8s;

pub use request::{GroupVersionKind, GroupVersionResource, Operation, Request, UserInfo};
pub use response::{accept, mutate, reject, Response};
pub use settings::NoSettings;

/// Code of the rejection of a raw document that does not parse as the
/// policy's [`RawPolicy::Request`].
pub const MALFORMED_DOCUMENT_CODE: u16 = 400;

/// The error a policy may return from [`Policy::validate`]: anything that
/// converts with `?`. The request is then rejected with code 500 and the
/// error's text.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the policy [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An admission policy.
pub trait Policy {
    /// The policy's settings, parsed from the JSON the operator configured
    /// (`{}` when none). Use `#[serde(default)]` for optional fields.
    type Settings: serde::de::DeserializeOwned;

    /// Decides on one request.
    fn validate(request: &Request, settings: &Self::Settings) -> Result<Response>;

    /// Checks settings once, before any request is evaluated. Settings that
    /// do not parse as [`Policy::Settings`] are refused before this runs. The
    /// error message is shown to the operator.
    fn validate_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }
}

/// A policy for raw JSON documents (Kubewarden's raw policies), served on
/// `/validate_raw`.
///
/// ```
/// use palisade_sdk::{accept, reject, NoSettings, RawPolicy, Response};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Order {
///     quantity: u32,
/// }
///
/// struct SmallOrders;
///
/// impl RawPolicy for SmallOrders {
///     type Request = Order;
///     type Settings = NoSettings;
///
///     fn validate(order: &Order, _: &NoSettings) -> palisade_sdk::Result<Response> {
///         Ok(if order.quantity > 10 { reject("at most 10", 403) } else { accept() })
///     }
/// }
/// ```
pub trait RawPolicy {
    /// The document, parsed from the JSON the client sent. A document that
    /// does not parse as this type is rejected with code 400 before
    /// [`RawPolicy::validate`] runs.
    type Request: serde::de::DeserializeOwned;
    /// The policy's settings, as for [`Policy::Settings`].
    type Settings: serde::de::DeserializeOwned;

    /// Decides on one document. [`mutate`] takes the whole document after
    /// the change.
    fn validate(request: &Self::Request, settings: &Self::Settings) -> Result<Response>;

    /// Checks settings once, before any document is evaluated.
    fn validate_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }
}

/// Exports a [`Policy`] as the policy component's `validate` and
/// `validate-settings` functions. Use it once, at the crate root.
///
/// On targets other than wasm32 it expands to nothing, so the policy crate
/// also builds natively for unit tests.
#[cfg(not(feature = "raw"))]
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct PalisadeExport;

            impl $crate::__wit::Guest for PalisadeExport {
                fn validate(
                    request: $crate::__wit::AdmissionRequest,
                    settings: ::std::string::String,
                ) -> $crate::__wit::ValidationResponse {
                    $crate::dispatch::validate_wit::<$policy>(request, &settings)
                }

                fn validate_settings(
                    settings: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::dispatch::validate_settings::<$policy>(&settings)
                }
            }

    $crate::__wit::__export_policy_world!(PalisadeExport with_types_in $crate::__wit);
        };
    };
}

/// With the `raw` feature the component is of the `raw-policy` world, which
/// a Kubernetes policy cannot export.
#[cfg(feature = "raw")]
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        ::core::compile_error!("export_policy! exports a Kubernetes policy, but palisade-sdk's `raw` feature is on: use export_raw_policy! for a raw policy, or build this crate apart from raw policies (features unify within one cargo invocation)");
    };
}

/// Exports a [`RawPolicy`] as the raw-policy component's `validate-raw` and
/// `validate-settings` functions. Needs the SDK's `raw` feature. Use it
/// once, at the crate root; on targets other than wasm32 it expands to
/// nothing.
#[cfg(feature = "raw")]
#[macro_export]
macro_rules! export_raw_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct PalisadeExport;

            impl $crate::__wit::Guest for PalisadeExport {
                fn validate_raw(
                    request: ::std::string::String,
                    settings: ::std::string::String,
                ) -> $crate::__wit::ValidationResponse {
                    $crate::dispatch::to_wit($crate::dispatch::validate_raw::<$policy>(
                        &request, &settings,
                    ))
                }

                fn validate_settings(
                    settings: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::dispatch::validate_raw_settings::<$policy>(&settings)
                }
            }

    $crate::__wit::__export_raw_policy_world!(PalisadeExport with_types_in $crate::__wit);
        };
    };
}

/// Without the `raw` feature the component is of the `policy` world, which
/// a raw policy cannot export.
#[cfg(not(feature = "raw"))]
#[macro_export]
macro_rules! export_raw_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        ::core::compile_error!("export_raw_policy! needs palisade-sdk's `raw` feature: palisade-sdk = { version = \"0.1\", features = [\"raw\"] }");
    };
}

/// The README's "write your first policy" example, compiled as a doctest so
/// that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
