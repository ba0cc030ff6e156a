//! `statecast serve`: load the configuration, start the broker, print the
//! ready line, and shut down cleanly on SIGINT, SIGTERM or SIGHUP.

use std::io::Write as _;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};

use super::ServeArgs;
use crate::config::{Config, Overrides};
use crate::server::Server;

/// Runs the broker until a shutdown signal.
#[must_use]
pub fn run(args: &ServeArgs) -> ExitCode {
    // Block the signals before any thread exists, so that every thread
    // inherits the mask and only this thread receives them, in `wait`.
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        signals.add(signal);
    }
    if let Err(error) = signals.thread_block() {
        eprintln!("statecast: cannot block signals: {error}");
        return ExitCode::FAILURE;
    }
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        listen: args.listen.clone(),
        admin_listen: args.admin_listen.clone(),
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("statecast: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    if let Err(error) = crate::logging::init_server(&config.logging, &config.log_dir()) {
        eprintln!(
            "statecast: cannot open the log file in {}: {error}",
            config.log_dir().display()
        );
        return ExitCode::FAILURE;
    }
    let server = match Server::start(&config) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("statecast: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "ready client={} admin={}",
        server.client_addr(),
        server.admin_addr()
    );
    let _ = stdout.flush();
    drop(stdout);
    loop {
        match signals.wait() {
            Ok(Signal::SIGQUIT) => {
                tracing::warn!(
                    "SIGQUIT received: minidumps are not implemented in this version; continuing to run"
                );
            }
            Ok(signal) => {
                tracing::info!("{signal} received: shutting down");
                break;
            }
            Err(error) => {
                tracing::error!(%error, "waiting for signals failed: shutting down");
                break;
            }
        }
    }
    server.shutdown();
    ExitCode::SUCCESS
}
