//! Settings helpers.

use serde::Deserialize;

/// Settings of a policy that takes none. Any JSON object is accepted, so an
/// operator's stray field does not break the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct NoSettings {}

/// Parses the settings text; empty text means no settings (`{}`).
pub(crate) fn parse<S: serde::de::DeserializeOwned>(settings: &str) -> Result<S, String> {
    let text = if settings.trim().is_empty() {
        "{}"
    } else {
        settings
    };
    serde_json::from_str(text).map_err(|e| format!("invalid settings: {e}"))
}
