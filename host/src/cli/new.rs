//! `palisade new`: a policy project to start from, like Kubewarden's
//! templates: a Cargo project depending on the SDK, a tested example policy,
//! its metadata, settings and a request to run it on.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// Name of the policy (and of its directory and crate).
    name: String,
    /// The `guest-sdk` directory of a Palisade checkout (default: the one
    /// this `palisade` was built from).
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

/// Template files and where they go.
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("template/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("template/lib.rs.tmpl")),
    ("metadata.yml", include_str!("template/metadata.yml.tmpl")),
    ("settings.yml", include_str!("template/settings.yml.tmpl")),
    ("README.md", include_str!("template/README.md.tmpl")),
    (".gitignore", include_str!("template/gitignore.tmpl")),
    (
        "test_data/deployment-create.json",
        include_str!("../../../fixtures/admission/deployment-create.json"),
    ),
];

pub(super) fn new(args: &NewArgs) -> anyhow::Result<()> {
    let name = &args.name;
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("`{name}` is not a policy name: use lowercase letters, digits, `-` and `_`, starting with a letter");
    }
    let dir = Path::new(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = sdk_path(args.sdk_path.as_deref())?;
    let sdk = sdk
        .to_str()
        .with_context(|| format!("the SDK path {} is not UTF-8", sdk.display()))?;
    let crate_name = name.replace('-', "_");
    for (file, template) in FILES {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk.replace('\\', "/"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    super::print(&format!(
        "created {name}/: a policy limiting Deployment replicas, with tests, metadata.yml, settings.yml and test_data/\n\
         next: cd {name} && cargo build --release --target wasm32-wasip2 && \
         palisade run target/wasm32-wasip2/release/{crate_name}.wasm --request-path test_data/deployment-create.json --settings-path settings.yml"
    ))
}

/// The SDK directory, absolute: given, or the one next to this binary's
/// source tree.
fn sdk_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (path, origin) = match given {
        Some(path) => (path.to_owned(), "--sdk-path"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"),
            "the Palisade source this palisade was built from",
        ),
    };
    if !path.join("Cargo.toml").is_file() {
        bail!(
            "no palisade-sdk at {} ({origin}); pass --sdk-path <palisade checkout>/guest-sdk",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
}
