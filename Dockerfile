# Multi-stage build: compile in the Rust image, ship a slim non-root runtime with conf/ and
# the GeoIP databases the example config names.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin gatehouse

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /app gatehouse
WORKDIR /app
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY conf ./conf
COPY geoip-fixtures ./geoip-fixtures
USER gatehouse
EXPOSE 8080 9901
# bookworm-slim has no curl: the binary asks its own admin listener (conf/gatehouse.yaml's
# server.admin.listen; pass --admin ADDR when yours differs).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["gatehouse", "health", "--admin", "127.0.0.1:9901"]
# The example config listens on 0.0.0.0:8080; mount your own over /app/conf/gatehouse.yaml.
ENTRYPOINT ["gatehouse"]
CMD ["-c", "conf/gatehouse.yaml"]
