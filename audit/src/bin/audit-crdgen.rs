//! Prints the report CRDs (OpenReports and wgpolicy) as YAML documents.

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", palisade_audit::reports::crds_yaml()?);
    Ok(())
}
