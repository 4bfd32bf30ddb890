//! `palisade inspect`: what a policy is and what it can reach, without running it.

use anyhow::bail;
use clap::Args;
use serde::Serialize;
use wasmtime::wasmparser::{ComponentTypeRef, Parser, Payload};

use super::read_file;
use crate::metadata::{read_metadata, ExecutionMode, PolicyMetadata};
use crate::{module_digest, ModuleKind};

#[derive(Debug, Args)]
pub(super) struct InspectArgs {
    /// The policy: a `.wasm` file or a reference (`registry://...`, `https://...`).
    policy: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    fetch: super::fetch::FetchArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    kind: &'static str,
    sha256: String,
    size: usize,
    /// Imported interfaces (components) or modules (core modules).
    imports: Vec<String>,
    /// Host capabilities among the imports.
    capabilities: Vec<String>,
    metadata: Option<PolicyMetadata>,
}

pub(super) fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let path = args.fetch.resolve(&args.policy)?;
    let wasm = read_file(&path, "policy")?;
    let report = report(&wasm, &args.policy)?;
    if args.json {
        return super::print(&serde_json::to_string_pretty(&report)?);
    }
    let mut text = String::new();
    text += &format!("kind:         {}\n", report.kind);
    text += &format!("sha256:       {}\n", report.sha256);
    text += &format!("size:         {} bytes\n", report.size);
    let capabilities = if report.capabilities.is_empty() {
        "none".to_owned()
    } else {
        report.capabilities.join(", ")
    };
    text += &format!("capabilities: {capabilities}\nimports:\n");
    for import in &report.imports {
        text += &format!("  {import}\n");
    }
    match &report.metadata {
        Some(m) => text += &format!("metadata:\n{}", serde_yaml::to_string(m)?),
        None => text += "metadata:     none (add it with `palisade annotate`)",
    }
    super::print(&text)
}

const COMPONENT: &str = "component (policy world: admission requests)";
const RAW_COMPONENT: &str = "component (raw-policy world: raw JSON documents)";

/// Whether a component exports the `raw-policy` world's `validate-raw`.
pub(super) fn exports_raw(wasm: &[u8]) -> bool {
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(Payload::ComponentExportSection(section)) if depth == 0 => {
                if section
                    .into_iter()
                    .any(|e| e.is_ok_and(|e| e.name.name == crate::bindings::RAW_EXPORT))
                {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

fn report(wasm: &[u8], source_name: &str) -> anyhow::Result<Report> {
    let metadata = read_metadata(wasm)?;
    let kind = match ModuleKind::detect(wasm) {
        Some(ModuleKind::Component) if exports_raw(wasm) => RAW_COMPONENT,
        Some(ModuleKind::Component) => COMPONENT,
        Some(ModuleKind::CoreModule) => match metadata.as_ref().and_then(|m| m.execution_mode) {
            Some(ExecutionMode::Wasi) => "wasi (core module)",
            Some(ExecutionMode::Opa) => "opa (core module)",
            Some(ExecutionMode::Gatekeeper) => "gatekeeper (core module)",
            _ if crate::policy::exports_guest_call(wasm) => "waPC (core module)",
            _ => "core module (not a policy: no `__guest_call` export)",
        },
        None => bail!("{source_name} is not a WebAssembly module"),
    };
    let mut imports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| anyhow::anyhow!("{source_name} is not a valid module: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import = import?;
                    // Type imports (`admission-request`) are not things the policy can reach.
                    if matches!(
                        import.ty,
                        ComponentTypeRef::Instance(_) | ComponentTypeRef::Func(_)
                    ) {
                        imports.push(import.name.name.to_owned());
                    }
                }
            }
            Payload::ImportSection(section) if depth == 0 => {
                for import in section.into_imports() {
                    let import = import?;
                    let name = import.module.to_owned();
                    if !imports.contains(&name) {
                        imports.push(name);
                    }
                }
            }
            _ => {}
        }
    }
    // waPC policies reach capabilities through `__host_call`; their metadata lists them.
    let mut capabilities: Vec<String> = imports
        .iter()
        .filter_map(|i| crate::policy::palisade_interface(i))
        .filter(|i| *i != "log" && *i != "types")
        .map(str::to_owned)
        .collect();
    if let Some(m) = &metadata {
        if kind != COMPONENT && kind != RAW_COMPONENT {
            capabilities.extend(m.host_capabilities.iter().cloned());
        }
    }
    Ok(Report {
        kind,
        sha256: module_digest(wasm),
        size: wasm.len(),
        imports,
        capabilities,
        metadata,
    })
}
