# syntax=docker/dockerfile:1
# The Oxbow images, one target each, built from the repository root:
#   docker build --target worker   -t oxbow-worker:0.1.0 .
#   docker build --target operator -t oxbow-operator:0.1.0 .
# Both binaries come from one release build, so building the second image reuses the first's.
# Neither image has a HEALTHCHECK: Kubernetes probes their /healthz and /readyz endpoints.
# checkov:skip=CKV_DOCKER_2: Kubernetes probes /healthz and /readyz (worker admin port, operator metrics port); a distroless image has no shell or HTTP client to run a HEALTHCHECK with

# The Rust toolchain this repository is built and tested with (Debian bookworm).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is compiled from source by rdkafka-sys (configure and make, with the image's C
# toolchain) and linked into both binaries, with OpenSSL and zlib linked statically: the
# runtime image needs nothing beyond glibc and libgcc.
ENV OPENSSL_STATIC=1 \
    LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p oxbow-worker -p oxbow-operator \
    && install -D -m 0755 target/release/oxbow-worker /out/oxbow-worker \
    && install -D -m 0755 target/release/oxbow-operator /out/oxbow-operator

# What both images share. Distroless: glibc, libgcc, CA certificates and tzdata; no shell, no
# package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/oxbow-dev/oxbow"
# The distroless nonroot user; the worker StatefulSet and the chart's Deployment set the same
# ids in their pod security contexts.
USER 65532:65532

# The worker, run by the operator as the StatefulSet container `worker` with args [run], a
# read-only root filesystem, the job file at /etc/oxbow/job/job.json, the admin token at
# /etc/oxbow/admin/token, Kafka credentials under /etc/oxbow/kafka and an emptyDir at /tmp.
FROM runtime AS worker
LABEL org.opencontainers.image.title="oxbow-worker" \
      org.opencontainers.image.description="Oxbow worker: consumes Kafka, runs a StreamJob's pipeline with checkpointed state, produces exactly once."
COPY --from=build /out/oxbow-worker /usr/local/bin/oxbow-worker
# The admin API: /healthz, /readyz, /metrics, and the token-protected /v1 endpoints.
EXPOSE 9249
ENTRYPOINT ["/usr/local/bin/oxbow-worker"]
CMD ["run"]

# The operator, run by the Helm chart with args [run] and a read-only root filesystem.
FROM runtime AS operator
LABEL org.opencontainers.image.title="oxbow-operator" \
      org.opencontainers.image.description="Oxbow operator: reconciles StreamJobs into StatefulSets of Oxbow workers."
COPY --from=build /out/oxbow-operator /usr/local/bin/oxbow-operator
# /metrics, /healthz, /readyz (OXBOW_METRICS_ADDR).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/oxbow-operator"]
CMD ["run"]
