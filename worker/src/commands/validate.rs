//! `oxbow-worker validate <streamjob.yaml>`: a StreamJob manifest checked with the same
//! validation the operator applies, every problem named with its field.

use std::{path::Path, process::ExitCode};

use oxbow_crds::validation::{self, ValidatedSpec};

/// Exit code 0 when the manifest is valid, 1 with each problem on stderr when it is not, 2
/// when it cannot be read.
pub fn main(path: &Path) -> ExitCode {
    let path = path.display();
    let text = match std::fs::read_to_string(path.to_string()) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("failed to read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let job = match oxbow_crds::parse_manifest(&text) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("{path} is not a StreamJob manifest: {e}");
            return ExitCode::FAILURE;
        }
    };
    match validation::validate(&job.spec) {
        Ok(valid) => {
            println!("{path}: valid. {}", summary(&valid));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{path}: {} problem(s):", errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn summary(valid: &ValidatedSpec) -> String {
    let steps = valid.pipeline.steps.len();
    let shuffle = if valid.pipeline.needs_shuffle() {
        "repartitions through the job's shuffle topic"
    } else {
        "needs no repartition topic"
    };
    format!("{steps} pipeline step(s); {shuffle}.")
}
