# p2pnode daemon image. Build: docker build -t p2pnode .
# Run:   docker run -v p2pnode-data:/data -p 4001:4001 p2pnode
# Drive: docker exec <container> p2pnode status

# --- build stage: wheels for p2pnode and its dependencies (compilers stay here) ---
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libgmp-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY p2pnode ./p2pnode
COPY protocols ./protocols
COPY simulations ./simulations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime stage: no compilers, no sources, a non-root user ---
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgmp10 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin p2pnode \
    && mkdir -p /data && chown p2pnode:p2pnode /data && chmod 0700 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels p2pnode && rm -rf /wheels
USER p2pnode
ENV P2PNODE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 4001
# --init creates the identity key and config.toml in the volume on first start; the listen
# address is all interfaces because the container's network is the boundary here.
ENTRYPOINT ["p2pnode", "daemon", "--init"]
CMD ["--listen", "/ip4/0.0.0.0/tcp/4001"]
