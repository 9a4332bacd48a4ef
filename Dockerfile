# Build: docker build -t usherd .
# Run:   docker run --rm -p 8080:8080 -p 9901:9901 \
#          -v "$PWD/config/usherd.toml:/etc/usherd/usherd.toml:ro" usherd
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin usherd

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home usherd \
 && mkdir -p /etc/usherd
COPY --from=build /src/target/release/usherd /usr/local/bin/usherd
COPY config/usherd.toml /etc/usherd/usherd.toml
USER usherd
EXPOSE 8080 9901
ENV USHERD_CONFIG=/etc/usherd/usherd.toml
ENTRYPOINT ["usherd"]
CMD ["run"]
