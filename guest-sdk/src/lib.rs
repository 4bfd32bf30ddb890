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
//! Crate features: `k8s` re-exports typed Kubernetes objects
//! (k8s-openapi) as [`k8s`]; `testing` adds the native test harness.

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

/// Exports a [`Policy`] as the policy component's `validate` and
/// `validate-settings` functions. Use it once, at the crate root.
///
/// On targets other than wasm32 it expands to nothing, so the policy crate
/// also builds natively for unit tests.
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

/// The README's "write your first policy" example, compiled as a doctest so
/// that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
