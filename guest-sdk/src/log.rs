//! Logging into the host's logs, tagged with the policy id.
//!
//! ```
//! palisade_sdk::info!("checked {} containers", 3);
//! palisade_sdk::log::write_with_fields(
//!     palisade_sdk::log::Level::Warn,
//!     "image without digest",
//!     &[("image", "nginx:1.27")],
//! );
//! ```
//!
//! Natively (unit tests), records go to the test harness when the `testing`
//! feature is on, and nowhere otherwise.

/// Severity of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes one record.
pub fn write(level: Level, message: &str) {
    write_with_fields(level, message, &[]);
}

/// Writes one record with key/value fields.
pub fn write_with_fields(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::__wit::palisade::policy::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wit::log(level, message, &fields);
    }
    #[cfg(all(not(target_arch = "wasm32"), feature = "testing"))]
    crate::testing::record_log(level, message, fields);
    #[cfg(all(not(target_arch = "wasm32"), not(feature = "testing")))]
    let _ = (level, message, fields);
}

/// Logs at trace level, `format!`-style.
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Trace, &::std::format!($($arg)*)) }; }
/// Logs at debug level, `format!`-style.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)*)) }; }
/// Logs at info level, `format!`-style.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)*)) }; }
/// Logs at warn level, `format!`-style.
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)*)) }; }
/// Logs at error level, `format!`-style.
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)*)) }; }
