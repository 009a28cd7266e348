# syntax=docker/dockerfile:1
#
# wharf in a container:
#   docker build -t wharf .
#   docker run -d -p 8080:8080 \
#     -v "$PWD/wharf.yaml:/etc/wharf/wharf.yaml:ro" -v wharf-data:/var/lib/wharf \
#     -e WHARF_ADMIN_PASSWORD=... wharf
#
# The image listens on 0.0.0.0:8080 (WHARF_LISTEN below overrides `listen` in the config file;
# pass -e WHARF_LISTEN=... to change it, and adapt EXPOSE/HEALTHCHECK). data_dir defaults to
# /var/lib/wharf, which belongs to the unprivileged user the process runs as.

# --- build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# Everything but what .dockerignore leaves out (target/, .tools/, .git/).
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/wharf /usr/local/bin/wharf

# --- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 wharf \
 && useradd --uid 10001 --gid wharf --home-dir /var/lib/wharf --no-create-home \
      --shell /usr/sbin/nologin wharf \
 && install -d -o wharf -g wharf -m 0750 /var/lib/wharf \
 && install -d -m 0755 /etc/wharf
COPY --from=build /usr/local/bin/wharf /usr/local/bin/wharf

ENV WHARF_CONFIG=/etc/wharf/wharf.yaml \
    WHARF_LISTEN=0.0.0.0:8080
USER 10001:10001
WORKDIR /var/lib/wharf
EXPOSE 8080

# No curl in the slim image: bash's /dev/tcp sends a plain HTTP/1.0 GET /healthz and the first
# status line must say 200. (With `tls:` configured, replace this check: it speaks plain HTTP.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && read -r -t 5 _ status _ <&3 && [ \"$status\" = 200 ]"]

# wharf handles SIGTERM (docker stop) gracefully: it stops accepting and drains in-flight
# requests for up to shutdown_grace (30s by default), so give `docker stop -t` at least that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["wharf"]
CMD ["serve"]
