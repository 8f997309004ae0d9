//! How a command-line program of the project starts and ends (`cpns`, `cpns-bench`): one
//! readable line per log event on standard error, filtered by `CPNS_LOG`, a multi-threaded
//! runtime, and an exit status with the error's chain on one line.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Runs `main` on a new runtime, logging to standard error at `default_log` unless `CPNS_LOG`
/// says otherwise (an `EnvFilter` directive, e.g. `CPNS_LOG=debug`). Success exits 0; an error
/// is printed as `error: …` (with its causes, `{:#}`) and exits 1.
pub fn run<E: Display>(default_log: &str, main: impl Future<Output = Result<(), E>>) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CPNS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
