use std::process::ExitCode;

fn main() -> ExitCode {
    rwop_guard::cli::run(rwop_guard::cli::Cli::parse_args())
}
