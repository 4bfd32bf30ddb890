//! `policy-server`: the admission webhook.

/// jemalloc rather than glibc's malloc. Evaluations run on many threads and
/// a reload frees a whole policy set that other threads allocated; glibc
/// kept that memory in its per-thread arenas, so resident memory grew with
/// every reload under load (about 2 MiB each: 79 to 133 MiB in a 10-minute
/// soak, still rising). With jemalloc it stays flat, and throughput is a
/// little higher. mimalloc was tried too: flat, but about twice the
/// resident memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    palisade_host::server::main()
}
