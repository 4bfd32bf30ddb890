//! `policy-server`: the admission webhook.

fn main() -> std::process::ExitCode {
    palisade_host::server::main()
}
