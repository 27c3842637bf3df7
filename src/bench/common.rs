//! What the benches do around their measurements: the working directory announced at the
//! start, the JSON file opened first (a bad path fails before the run, not after it) and,
//! at the end, the tables and the JSON line on stdout, the JSON in the file.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Machine, Workdir};
use crate::cli::CliError;

/// A fresh working directory in `parent` and the machine, announced on stderr as
/// `wald bench {name}: working in …`.
pub(super) fn begin(name: &str, parent: Option<&Path>) -> Result<(Workdir, Machine), CliError> {
    let work = Workdir::create(parent)?;
    let machine = Machine::probe();
    eprintln!(
        "wald bench {name}: working in {} ({} CPUs, load {})",
        work.0.display(),
        machine.nproc,
        machine.loadavg
    );
    Ok((work, machine))
}

/// Where the report goes at the end: stdout, and the `--json` file when given.
pub(super) struct Output(Option<(File, PathBuf)>);

impl Output {
    /// Creates the `--json` file, when given.
    pub(super) fn create(json: Option<&Path>) -> Result<Self, CliError> {
        let file = match json {
            Some(p) => Some((
                File::create(p).map_err(|e| format!("creating {}: {e}", p.display()))?,
                p.to_path_buf(),
            )),
            None => None,
        };
        Ok(Self(file))
    }

    /// Prints `tables`, writes the report's pretty JSON to the file, then prints its JSON
    /// line.
    pub(super) fn finish(self, tables: &str, report: &impl Serialize) -> Result<(), CliError> {
        print!("{tables}");
        let line = serde_json::to_string(report)?;
        if let Some((mut f, p)) = self.0 {
            f.write_all((serde_json::to_string_pretty(report)? + "\n").as_bytes())
                .map_err(|e| format!("writing {}: {e}", p.display()))?;
            eprintln!("JSON written to {}", p.display());
        }
        println!("{line}");
        Ok(())
    }
}
