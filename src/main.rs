//! The `raptiformica` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Help names the installed server and compute types; other runs parse as derived.
    let cli = raptiformica::cli::help::parse();
    match raptiformica::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<raptiformica::sys::exit::ExitWith>().is_some() => {
            let code = e.downcast_ref::<raptiformica::sys::exit::ExitWith>().map_or(1, |c| c.0);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("error: {e}");
            let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
            if !causes.is_empty() {
                eprintln!("\nCaused by:");
                for cause in causes {
                    eprintln!("  {}", cause.replace('\n', "\n  "));
                }
            }
            let code = e
                .downcast_ref::<raptiformica::sys::exit::FailWith>()
                .and_then(|f| u8::try_from(f.code).ok());
            code.map_or(ExitCode::FAILURE, ExitCode::from)
        }
    }
}
