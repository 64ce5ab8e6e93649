# Builds tickflare for docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tickflare

FROM debian:bookworm-slim
WORKDIR /app
COPY --from=build /src/target/release/tickflare /usr/local/bin/tickflare
COPY pipelines pipelines
COPY schemas schemas
COPY data data
ENTRYPOINT ["tickflare"]
