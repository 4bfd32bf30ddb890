//! `palisade`: the policy author's command line.

fn main() -> std::process::ExitCode {
    palisade_host::cli::main()
}
