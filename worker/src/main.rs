//! The Oxbow worker binary.
//!
//! `oxbow-worker validate <streamjob.yaml>` checks a StreamJob manifest with the same
//! validation the operator applies. The runtime (`run`, `local`) arrives with the worker
//! runtime issue.

use std::process::ExitCode;

use oxbow_crds::validation::{self, ValidatedSpec};

const USAGE: &str = "usage:
  oxbow-worker validate <streamjob.yaml>          check a StreamJob manifest
  oxbow-worker bench pipeline [--events N]        run the reference job in process (default N = 20000000)
  oxbow-worker bench kafka --bootstrap HOST:PORT [--events N]
                                                  Kafka to Kafka: bare loop vs exactly-once worker (default N = 200000)
  oxbow-worker bench recovery --bootstrap HOST:PORT
                                                  SIGKILL to processing again, and resident memory idle and under load
  oxbow-worker run [--job PATH] [--ordinal N] [--bootstrap HOST:PORT] [--admin-addr ADDR] [--kafka-timeout 30s]
                                                  run as a StreamJob's worker (the StatefulSet pod's command)
  oxbow-worker local <streamjob.yaml> [--bootstrap HOST:PORT] [--storage URL] [--duration 30s]
                                                  run a StreamJob locally: embedded broker and, for
                                                  the shipped examples, generated input";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["validate", path] => validate(path),
        ["bench", "pipeline"] => bench_pipeline(20_000_000),
        ["bench", "kafka", "--bootstrap", bootstrap] => bench_kafka(bootstrap, 200_000),
        ["bench", "recovery", "--bootstrap", bootstrap] => bench_recovery(bootstrap),
        ["bench", "kafka", "--bootstrap", bootstrap, "--events", n] => {
            match n.replace('_', "").parse() {
                Ok(n) => bench_kafka(bootstrap, n),
                Err(_) => {
                    eprintln!("--events takes a number of events, got {n:?}");
                    ExitCode::from(2)
                }
            }
        }
        ["bench", "pipeline", "--events", n] => match n.replace('_', "").parse() {
            Ok(n) => bench_pipeline(n),
            Err(_) => {
                eprintln!("--events takes a number of events, got {n:?}");
                ExitCode::from(2)
            }
        },
        ["run", rest @ ..] => run(rest),
        ["local", rest @ ..] => local(rest),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[&str]) -> ExitCode {
    oxbow_worker::cli::init_logging();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let options = match oxbow_worker::cli::RunOptions::parse(&args) {
        Ok(options) => options,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = match options.config() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match oxbow_worker::cli::run(config, &options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn local(args: &[&str]) -> ExitCode {
    oxbow_worker::cli::init_logging_default("warn");
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let options = match oxbow_worker::local::LocalOptions::parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("oxbow-worker local: {e}");
            return ExitCode::from(2);
        }
    };
    match oxbow_worker::local::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbow-worker local: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench_kafka(bootstrap: &str, events: u64) -> ExitCode {
    oxbow_worker::cli::init_logging_default("warn");
    match oxbow_worker::bench_kafka::run(bootstrap, events) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("the Kafka benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench_recovery(bootstrap: &str) -> ExitCode {
    oxbow_worker::cli::init_logging_default("warn");
    match oxbow_worker::bench_recovery::run(bootstrap) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("the recovery benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench_pipeline(events: u64) -> ExitCode {
    match oxbow_worker::bench::run_pipeline(events) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("the reference job failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &str) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
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
