//! The images (`Dockerfile`) against the workspace and the cluster: each copies the binary the
//! workspace builds and runs it as the operator's worker StatefulSet and the chart's Deployment
//! expect (user, ports, arguments, mounts), on a base with no shell.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, process::Command};

use oxbow_tests::{
    chart::{render, worker_stateful_set},
    dockerfile::{self, base_image, image},
    operator, repo_root,
    tools::run,
    worker,
    yaml::{documents, one_of_kind},
};
use serde_json::{Value, json};

/// The `[[bin]]` target names of a workspace package, from `cargo metadata`.
fn bin_names(metadata: &Value, package: &str) -> Vec<String> {
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package} in the workspace"))["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir)
}

#[test]
fn the_images_run_what_the_workspace_builds_as_the_cluster_expects() {
    let root = repo_root();
    let stages = dockerfile::stages(&std::fs::read_to_string(root.join("Dockerfile")).unwrap());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata: Value = serde_json::from_str(
        &run(
            Command::new(cargo).current_dir(&root).args([
                "metadata",
                "--no-deps",
                "--offline",
                "--format-version",
                "1",
            ]),
            None,
        )
        .unwrap(),
    )
    .unwrap();

    // The build stage builds both packages' binaries, and each image copies its own.
    let build = &stages[0];
    let commands = build.all("RUN").join(" ");
    assert!(
        commands.contains("cargo build --release --locked"),
        "{commands}"
    );
    for (package, target) in [("oxbow-worker", "worker"), ("oxbow-operator", "operator")] {
        let bins = bin_names(&metadata, package);
        assert_eq!(bins.len(), 1, "{package}: {bins:?}");
        let bin = &bins[0];
        assert!(commands.contains(&format!("-p {package}")), "{commands}");
        assert!(
            commands.contains(&format!("target/release/{bin} ")),
            "{commands}"
        );
        let image = image(&stages, target).unwrap();
        assert_eq!(
            Path::new(&image.entrypoint)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            bin.as_str()
        );
        assert!(image.copied.contains(&image.entrypoint), "{image:?}");
        let stage = dockerfile::stage(&stages, target).unwrap();
        let copy = stage.all("COPY").join(" ");
        assert!(copy.contains(&format!("--from={} ", build.name)), "{copy}");
        // The runtime base has no shell: exec form only.
        let base = base_image(&stages, stage);
        assert!(
            base.contains("distroless") && base.ends_with(":nonroot"),
            "{target}: {base}"
        );
    }

    // The worker image as the operator's StatefulSet runs it.
    let worker_image = image(&stages, "worker").unwrap();
    let statefulset = worker_stateful_set().unwrap();
    let pod = statefulset.spec.unwrap().template.spec.unwrap();
    let security = pod.security_context.unwrap();
    assert_eq!(
        (
            security.run_as_user.unwrap(),
            security.run_as_group.unwrap()
        ),
        worker_image.user
    );
    let container = &pod.containers[0];
    assert_eq!(container.args.clone().unwrap(), worker_image.args);
    assert!(container.command.is_none(), "the image's ENTRYPOINT runs");
    let ports: Vec<i32> = container
        .ports
        .clone()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, worker_image.ports);
    let mounts = container.volume_mounts.clone().unwrap();
    for path in &worker_image.copied {
        for mount in &mounts {
            assert!(
                !under(path, &mount.mount_path),
                "{path} would be hidden by the {} mount",
                mount.mount_path
            );
        }
    }
    // The files the worker reads by default are where the operator mounts them, read-only.
    for path in [
        oxbow_crds::jobfile::JOB_FILE_PATH,
        oxbow_crds::jobfile::ADMIN_TOKEN_PATH,
    ] {
        assert!(
            mounts
                .iter()
                .any(|m| under(path, &m.mount_path) && m.read_only == Some(true)),
            "{path} is not mounted: {mounts:?}"
        );
    }
    // A read-only root filesystem: the only writable place is the /tmp emptyDir.
    assert_eq!(
        container
            .security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
    let writable: Vec<&str> = mounts
        .iter()
        .filter(|m| m.read_only != Some(true))
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(writable, ["/tmp"]);

    // The operator image as the chart's Deployment runs it.
    let operator_image = image(&stages, "operator").unwrap();
    let docs = documents(&render("oxbow", "oxbow-system", &[]).unwrap());
    let deployment = one_of_kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        (
            pod["securityContext"]["runAsUser"].as_i64().unwrap(),
            pod["securityContext"]["runAsGroup"].as_i64().unwrap()
        ),
        operator_image.user
    );
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(operator_image.args));
    assert!(container["command"].is_null());
    assert_eq!(
        vec![container["ports"][0]["containerPort"].as_i64().unwrap()],
        operator_image
            .ports
            .iter()
            .map(|p| i64::from(*p))
            .collect::<Vec<_>>()
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // Both binaries know the command the images give them.
    for (binary, image) in [
        (worker::binary(), &worker_image),
        (operator::binary(), &operator_image),
    ] {
        let out = Command::new(&binary).arg("--help").output().unwrap();
        let usage = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let name = binary.file_name().unwrap().to_str().unwrap();
        assert!(
            usage.contains(&format!("{name} {}", image.args.join(" "))),
            "{name} does not list `{}`:\n{usage}",
            image.args.join(" ")
        );
    }
}
