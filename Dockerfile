# The usherd image: a non-root usherd on debian:bookworm-slim.
#
# Build (Rust build stage, then the runtime):
#   docker build -t usherd .
# Or around a binary built on this machine (no Rust image is pulled; the
# binary must link against bookworm's glibc or older):
#   cargo build --release
#   docker build --target runtime-prebuilt -t usherd .
# (--build-arg USHERD_BINARY=PATH picks another binary inside the context.)
# Run:
#   docker run --rm -p 8080:8080 -p 9901:9901 \
#     -v "$PWD/config/usherd.toml:/etc/usherd/usherd.toml:ro" usherd
#
# Stage order matters: the classic builder builds every stage up to the
# target, so runtime-prebuilt comes before the Rust stage it does not need.
# More in docs/compose.md.

FROM debian:bookworm-slim AS base
RUN useradd --system --uid 10001 --no-create-home usherd \
 && mkdir -p /etc/usherd
COPY config/usherd.toml /etc/usherd/usherd.toml
EXPOSE 8080 9901
ENV USHERD_CONFIG=/etc/usherd/usherd.toml
# No curl in the image: usherd probes itself. The default config's admin
# listens on 127.0.0.1:9901 and its page / needs no token; a config without
# that admin listener needs another --health-cmd (see docs/cli.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["usherd", "probe", "http://127.0.0.1:9901/"]
USER usherd
ENTRYPOINT ["usherd"]
CMD ["run"]

FROM base AS runtime-prebuilt
ARG USHERD_BINARY=target/release/usherd
COPY ${USHERD_BINARY} /usr/local/bin/usherd

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin usherd

FROM base AS runtime
COPY --from=build /src/target/release/usherd /usr/local/bin/usherd
