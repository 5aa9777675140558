# Prometheus from Debian's package on the same slim Debian base as the app (no registry needed),
# with whisper-api's scrape config and alert rules baked in. The `monitoring` compose profile
# builds it; retention comes from the command line there.
ARG RUNTIME_IMAGE=debian:bookworm-slim
FROM ${RUNTIME_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The package's `prometheus` user is made first with a fixed system uid (990), so USER can name it by number.
# hadolint ignore=DL3008
RUN groupadd --system --gid 990 prometheus \
    && useradd --system --uid 990 --gid prometheus --home-dir /var/lib/prometheus --shell /usr/sbin/nologin prometheus \
    && apt-get update \
    && apt-get install -y --no-install-recommends prometheus curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o prometheus -g prometheus /prometheus

COPY prometheus/prometheus.yml /etc/prometheus/prometheus.yml
COPY prometheus/rules/whisper-alerts.yml /etc/prometheus/rules/whisper-alerts.yml

USER 990:990
EXPOSE 9090
VOLUME ["/prometheus"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
