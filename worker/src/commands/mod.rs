//! The binary's commands, parsed by one `clap` parser: `run` (a StatefulSet pod's worker),
//! `local` (a StreamJob on a laptop), `validate` (a manifest checked as the operator checks
//! it) and `bench` (the benchmarks).

pub mod local;
pub mod run;
pub mod validate;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

/// The Oxbow worker: consumes Kafka, runs a StreamJob's pipeline with checkpointed state and
/// produces results exactly once.
#[derive(Debug, Parser)]
#[command(
    name = "oxbow-worker",
    version,
    propagate_version = true,
    after_help = "Examples:
  oxbow-worker run                      the worker of a StreamJob's StatefulSet pod
  oxbow-worker local manifests/examples/fraud-detector.yaml
  oxbow-worker validate streamjob.yaml
  oxbow-worker bench pipeline --events 1_000_000"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a StreamJob's worker (the StatefulSet pod's command).
    Run(RunArgs),
    /// Run a StreamJob locally: an embedded broker and, for the shipped examples, generated
    /// input; results on stdout.
    Local(LocalArgs),
    /// Check a StreamJob manifest with the validation the operator applies.
    Validate {
        /// The StreamJob manifest (YAML).
        manifest: PathBuf,
    },
    /// Run a benchmark and print its figures.
    #[command(subcommand)]
    Bench(Bench),
}

/// Options of `run`.
#[derive(Clone, Debug, Default, Args)]
pub struct RunArgs {
    /// The job file [default: $OXBOW_JOB_FILE, else the path the operator mounts]
    #[arg(long, value_name = "PATH")]
    pub job: Option<PathBuf>,
    /// This worker's StatefulSet ordinal [default: from $POD_NAME or $HOSTNAME, ending in -N]
    #[arg(long, value_name = "N")]
    pub ordinal: Option<u32>,
    /// Overrides the job's `spec.kafka.bootstrapServers`.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Address of the admin API [default: 0.0.0.0:9249]
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// How long one Kafka operation (fencing, commit, flush) may take.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub kafka_timeout: Duration,
}

/// Options of `local`.
#[derive(Clone, Debug, Args)]
pub struct LocalArgs {
    /// The StreamJob manifest, e.g. manifests/examples/fraud-detector.yaml.
    pub manifest: PathBuf,
    /// A real broker instead of the embedded one.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Where checkpoints go [default: file://./.oxbow/<job>]
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Stop after this long (default: at Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub duration: Option<Duration>,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// The reference job in process, for comparison with Flink running the same job.
    Pipeline {
        /// Events to generate.
        #[arg(long, default_value = "20000000", value_parser = count)]
        events: u64,
    },
    /// Kafka to Kafka: a bare consume-and-produce loop against the exactly-once worker.
    Kafka {
        /// The broker.
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: String,
        /// Input records.
        #[arg(long, default_value = "200000", value_parser = count)]
        events: u64,
    },
    /// SIGKILL to processing again, and resident memory idle and under load.
    Recovery {
        /// The broker.
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: String,
    },
}

/// A duration as the StreamJob spells them: `500ms`, `30s`, `5m`.
fn duration(s: &str) -> Result<Duration, String> {
    oxbow_crds::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// A count, with `_` allowed between digits: `20_000_000`.
fn count(s: &str) -> Result<u64, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("expected a number of events, got {s:?}"))
}

impl Bench {
    /// Runs the benchmark and prints its report.
    pub fn run(self) -> ExitCode {
        init_logging("warn");
        let report = match self {
            Bench::Pipeline { events } => {
                crate::bench::pipeline::run(events).map(|r| r.to_string())
            }
            Bench::Kafka { bootstrap, events } => crate::bench::kafka::run(&bootstrap, events),
            Bench::Recovery { bootstrap } => crate::bench::recovery::run(&bootstrap),
        };
        match report {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("the benchmark failed: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Installs the log subscriber: level from `OXBOW_LOG` (or `RUST_LOG`, else `default`), JSON
/// lines when `OXBOW_LOG_FORMAT=json`.
pub fn init_logging(default: &str) {
    let filter = std::env::var("OXBOW_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("OXBOW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("oxbow-worker: logging is not available: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_its_options_and_defaults_the_kafka_timeout() {
        let cli = Cli::try_parse_from(["oxbow-worker", "run", "--ordinal", "2", "--job", "j.json"])
            .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run: {cli:?}")
        };
        assert_eq!(args.ordinal, Some(2));
        assert_eq!(args.kafka_timeout, Duration::from_secs(30));
        let bad = Cli::try_parse_from(["oxbow-worker", "run", "--ordinal", "two"]).unwrap_err();
        assert!(bad.to_string().contains("--ordinal"), "{bad}");
    }

    #[test]
    fn bench_counts_allow_separators_and_refuse_words() {
        let cli = Cli::try_parse_from(["oxbow-worker", "bench", "pipeline", "--events", "1_000"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Bench(Bench::Pipeline { events: 1000 })
        ));
        let bad = Cli::try_parse_from(["oxbow-worker", "bench", "pipeline", "--events", "many"])
            .unwrap_err();
        assert!(
            bad.to_string().contains("expected a number of events"),
            "{bad}"
        );
    }
}
