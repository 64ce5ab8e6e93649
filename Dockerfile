# Builds tickflare for docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tickflare

FROM debian:bookworm-slim
# OpenSSL for TLS / SASL to managed clusters; the public CAs they present.
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/tickflare /usr/local/bin/tickflare
COPY pipelines pipelines
COPY schemas schemas
COPY data data
ENTRYPOINT ["tickflare"]
