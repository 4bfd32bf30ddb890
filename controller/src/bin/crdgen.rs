//! `crdgen`: prints the CRDs as YAML (`controller/crds/` holds the committed copy).

fn main() -> std::process::ExitCode {
    match palisade_controller::crd::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
