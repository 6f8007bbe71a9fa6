//! Writes the StreamJob CRD YAML.
//!
//! `crdgen` prints it; `crdgen --write` writes `crds/streamjobs.oxbow.dev.yaml`;
//! `crdgen --check` exits non-zero when the committed file differs from the types.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let yaml = match oxbow_crds::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("failed to serialize the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(oxbow_crds::CRD_FILE);
    match std::env::args().nth(1).as_deref() {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some("--write") => match std::fs::write(&path, &yaml) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("failed to write {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
        Some("--check") => match std::fs::read_to_string(&path) {
            Ok(committed) if committed == yaml => ExitCode::SUCCESS,
            Ok(_) => {
                eprintln!(
                    "{} is out of date with the StreamJob types; run `cargo run -p oxbow-crds --bin crdgen -- --write` and commit it",
                    path.display()
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("failed to read {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
        Some(other) => {
            eprintln!("unknown argument {other:?}; usage: crdgen [--write | --check]");
            ExitCode::from(2)
        }
    }
}
