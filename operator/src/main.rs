//! The Oxbow operator binary.
//!
//! The controller itself arrives with the operator issue; until then the binary can print the
//! CRD it serves, so that installs can be scripted against it.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("crd") => match oxbow_crds::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("failed to serialize the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "oxbow-operator {}: the StreamJob controller is not implemented yet.\nusage: oxbow-operator crd   print the StreamJob CRD",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
