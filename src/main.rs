use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    rwop_guard::cli::run(rwop_guard::cli::Cli::parse())
}
