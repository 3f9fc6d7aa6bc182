//! `ferrid`: one binary for the server, the agent and the admin CLI.
#![forbid(unsafe_code)]

mod admin_client;
mod agent_cmd;
mod audit_cmd;
mod cli;
mod dev;
mod exchange_cmd;
mod output;
mod policy_cmd;
mod revoke_cmd;
mod server_cmd;

use clap::Parser;

/// jemalloc hands freed memory back to the OS (background purging), where glibc's
/// allocator kept the transient buffers of entry syncs resident: measured agent RSS per
/// cached SVID fell from 7.1 KiB to the figure in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
