//! The `tickcast` binary: flags, configuration, tracing, allocator, run.
//! The flag tree and the tools' printing live in `cli.rs`; everything else
//! is the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Tool};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Tool::Convert(args)) => return cli::run_convert(args),
        Some(Tool::Inspect(args)) => return cli::run_inspect(args),
        None => {}
    }
    let log = cli.serve.log.clone();
    let config = match cli.serve.into_config() {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("tickcast: {e}");
            }
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(log)).with_target(false).init();
    if !tickcast::sys::raise_fd_limit() {
        tracing::warn!("could not raise the open-file limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.writers)
        .thread_name("writer")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickcast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tickcast::server::run(config, tickcast::server::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickcast: {e}");
            ExitCode::FAILURE
        }
    }
}
