//! Palisade's audit scanner: re-evaluates what is already in the cluster
//! with the policies that are active, in process through the host crate
//! (the verdict the policy-server's `/audit/<id>` endpoint would give,
//! without an HTTPS round trip per object and policy), and writes one
//! report per resource.
//!
//! [`policies`] decides what is audited, [`scanner`] runs a scan,
//! [`reports`] holds the report objects and their CRDs.

pub mod conditions;
pub mod offline;
pub mod options;
pub mod policies;
pub mod reports;
pub mod scanner;

pub use reports::ReportKind;
pub use scanner::{scan, ScanError, ScanOptions, Stats};
