#!/usr/bin/env bash
# Container tests: build the image with Podman, then run it five ways on loopback ports:
#   a) with the documented flags (--cap-add SYS_ADMIN --security-opt systempaths=unconfined):
#      ready with nsjail; curl checks, then the HTTP integration suite against it
#      (PYSANDBOX_URL=... npx tap test/integration), health check, graceful stop;
#   b) with no flags: the service starts, /readyz 503 with every probe's reason, /execute 503
#      SANDBOX_UNAVAILABLE (failing closed);
#   c) with no flags and `direct` permitted: every response says "backend": "direct";
#   d) with the least privilege deploy/k8s grants (capabilities SYS_ADMIN, SETUID, SETGID only,
#      read-only root, a user namespace of its own): ready with nsjail;
#   e) with one of those three capabilities fewer: nsjail's probe fails.
# On a fresh Debian machine (as root) it first installs podman, runc and debootstrap, writes
# /etc/containers/containers.conf when there is none, and builds the debian:trixie-slim base
# image from Debian's packages when it is missing (Docker Hub may be unreachable).
# Ends with a line "N passed, M failed"; exits non-zero when anything failed.
#
# Environment: PYSANDBOX_IMAGE (default pysandbox), PYSANDBOX_TEST_PORT (first of seven ports,
# default 18480), PYSANDBOX_SKIP_BUILD=1 (use the image as it is).
set -uo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${PYSANDBOX_IMAGE:-pysandbox}
BASE_IMAGE=docker.io/library/debian:trixie-slim
PORT_A=${PYSANDBOX_TEST_PORT:-18480}
PORT_B=$((PORT_A + 1))
PORT_C=$((PORT_A + 2))
READY_TIMEOUT_S=120
DOCUMENTED_FLAGS=(--cap-add SYS_ADMIN --security-opt systempaths=unconfined)
SECRET="pysandbox-container-secret-$RANDOM$RANDOM"
WORK=$(mktemp -d /tmp/pysandbox-container-test.XXXXXX)
STARTED=$(date +%s)

passed=0
failed=0
containers=()

cleanup() {
  local name
  for name in "${containers[@]}"; do podman rm -f -t 2 "$name" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '\n== %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'ok      %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAILED  %s\n' "$1"; [ $# -lt 2 ] || printf '        %s\n' "${2:0:1500}"; }
# check DESCRIPTION EXPECTED ACTUAL
check() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected [$2], got [$3]"; fi; }
finish() {
  printf '\ncontainer tests took %ss\n' $(($(date +%s) - STARTED))
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
die() { fail "$1" "${2:-}"; finish; }

# The value of a JavaScript expression over the JSON in file $1 (`b` is the body): jget FILE EXPR
jget() {
  node -e '
    const fs = require("node:fs")
    let b; try { b = JSON.parse(fs.readFileSync(process.argv[1], "utf8")) } catch { b = null }
    let v; try { v = (new Function("b", "return (" + process.argv[2] + ")"))(b) } catch (e) { v = "<" + e.message + ">" }
    process.stdout.write(typeof v === "string" ? v : String(JSON.stringify(v)))' "$1" "$2"
}
# http METHOD URL [JSON]: the status code on stdout, the body in $WORK/body.json
http() {
  local args=(-s -o "$WORK/body.json" -w '%{http_code}' --max-time 30 -X "$1" "$2")
  [ $# -lt 3 ] || args+=(-H 'Content-Type: application/json' --data-binary "$3")
  curl "${args[@]}" 2>/dev/null || true
}
# execute PORT SCRIPT: POST /execute with the script as the JSON body's only field
execute() {
  local body
  body=$(node -e 'process.stdout.write(JSON.stringify({ script: process.argv[1] }))' "$2")
  http POST "http://127.0.0.1:$1/execute" "$body"
}
# wait_for PORT PATH STATUS: until PATH answers STATUS, at most READY_TIMEOUT_S; prints seconds
wait_for() {
  local start now code
  start=$(date +%s%N)
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1$2" 2>/dev/null || true)
    now=$(date +%s%N)
    if [ "$code" = "$3" ]; then
      awk -v ns=$((now - start)) 'BEGIN { printf "%.1f", ns / 1e9 }'
      return 0
    fi
    [ $(((now - start) / 1000000000)) -lt "$READY_TIMEOUT_S" ] || return 1
    sleep 0.2
  done
}
# start NAME PORT [podman run options...]: a detached container of the image on 127.0.0.1:PORT
start() {
  local name=$1 port=$2
  shift 2
  containers+=("$name")
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman run -d --name "$name" -p "127.0.0.1:$port:8080" "$@" "$IMAGE" >/dev/null 2>"$WORK/$name.run.err"
}
show_logs() { podman logs "$1" 2>&1 | tail -n "${2:-20}" | cut -c1-400; }

HELLO=$'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n'
# Connects to the server's own port on loopback: refused by the jail (no network at all, errno
# 101 ENETUNREACH), reachable without isolation (the `direct` run proves the check can fail).
NETWORK=$'import socket\ndef main():\n    s = socket.socket()\n    s.settimeout(3)\n    try:\n        s.connect(("127.0.0.1", 8080))\n        return "connected"\n    except OSError as e:\n        return e.errno\n'

# --- Podman and the base image -----------------------------------------------------------------
setup_podman() {
  local need=()
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  command -v curl >/dev/null || need+=(curl)
  if ! podman image exists "$BASE_IMAGE" 2>/dev/null; then command -v debootstrap >/dev/null || need+=(debootstrap); fi
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null || die "install: ${need[*]}" "not root on a Debian system: install them, then run again"
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates >/dev/null ||
      die "apt-get install ${need[*]}"
  fi
  # Without raised ulimits every container fails (setrlimit RLIMIT_NOFILE/NPROC) on these hosts,
  # and crun fails on cgroup v1 "hybrid" mounts where runc works.
  if [ "$(id -u)" -eq 0 ] && [ ! -e /etc/containers/containers.conf ]; then
    log "writing /etc/containers/containers.conf (runc, ulimits)"
    mkdir -p /etc/containers
    cat > /etc/containers/containers.conf <<'EOF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]
[engine]
runtime = "runc"
EOF
  fi
  podman image exists "$BASE_IMAGE" && return
  # The same thing as the official slim image: a minimal Debian 13 from Debian's own mirror.
  log "making $BASE_IMAGE with debootstrap"
  local rootfs="$WORK/rootfs"
  debootstrap --variant=minbase trixie "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
    die "debootstrap trixie" "$(tail -5 "$WORK/debootstrap.log")"
  # "slim" as the official image does it: no apt lists or caches, no documentation, manual
  # pages or translations, now or from packages installed later.
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda}/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null || die "podman import $BASE_IMAGE"
  rm -rf "$rootfs"
}

build_image() {
  [ "${PYSANDBOX_SKIP_BUILD:-}" = 1 ] && return
  log "podman build -t $IMAGE ."
  local secret=() start
  # Behind a TLS-inspecting proxy npm and pip inside the build need the host's CA bundle; it is
  # a build secret, never stored in the image.
  [ -s /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt)
  start=$(date +%s)
  if podman build --format docker "${secret[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
    pass "the image builds ($(($(date +%s) - start)) s)"
  else
    die "the image builds" "$(tail -20 "$WORK/build.log")"
  fi
}

# --- a) the documented flags: nsjail --------------------------------------------------------------
test_documented_flags() {
  local name="pysandbox-test-a-$$" url="http://127.0.0.1:$PORT_A" limits=() seconds code
  log "a) podman run ${DOCUMENTED_FLAGS[*]} (port $PORT_A)"
  # The integration suite's limits (test/helpers/server.ts TEST_LIMITS), so its limit tests end
  # quickly and expect what the server enforces; and a secret no script may read.
  if [ -f test/helpers/server.ts ]; then
    mapfile -t limits < <(node -e '
      const s = require("node:fs").readFileSync("test/helpers/server.ts", "utf8")
      const block = (s.match(/TEST_LIMITS[^=]*=\s*Object\.freeze\(\{([\s\S]*?)\}\)/) || [])[1] || ""
      for (const [, k, v] of block.matchAll(/([A-Z_][A-Z0-9_]*)\s*:\s*\x27([^\x27]*)\x27/g)) console.log(`${k}=${v}`)')
  fi
  local envs=(-e "PYSANDBOX_TEST_SECRET=$SECRET")
  for kv in "${limits[@]}"; do envs+=(-e "$kv"); done
  start "$name" "$PORT_A" "${DOCUMENTED_FLAGS[@]}" "${envs[@]}" || die "a) the container starts" "$(cat "$WORK/$name.run.err")"
  if seconds=$(wait_for "$PORT_A" /readyz 200); then
    pass "a) /readyz 200 after ${seconds} s (cold start: podman run to ready)"
  else
    http GET "$url/readyz" >/dev/null
    die "a) /readyz 200 within ${READY_TIMEOUT_S} s" "$(cat "$WORK/body.json") $(show_logs "$name")"
  fi

  code=$(http GET "$url/readyz")
  check "a) /readyz names nsjail" nsjail "$(jget "$WORK/body.json" 'b.backend')"
  check "a) /readyz: no network" none "$(jget "$WORK/body.json" 'b.probes.at(-1).features.network')"
  check "a) /readyz: seccomp" true "$(jget "$WORK/body.json" 'b.probes.at(-1).features.seccomp')"
  # The start-up step (deploy/container-cgroups.sh) gave the jails a memory cgroup: a run's total is bounded.
  check "a) /readyz: a memory cgroup bounds each run" "per run" "$(jget "$WORK/body.json" 'b.probes.at(-1).features.memoryBound.slice(0, 7)')"
  check "a) /readyz: warm sandboxes on" zygote "$(jget "$WORK/body.json" 'b.probes.at(-1).features.warm')"
  printf '        memory limit by: %s\n' "$(jget "$WORK/body.json" 'b.probes.at(-1).features.memory')"

  code=$(execute "$PORT_A" "$HELLO")
  check "a) the README's example: 200" 200 "$code"
  check "a) the README's example: the documented body" \
    '{"result":{"msg":"success","value":42},"stdout":"Hello from main!\n","stderr":"","backend":"nsjail"}' \
    "$(jget "$WORK/body.json" 'JSON.stringify({ result: b.result, stdout: b.stdout, stderr: b.stderr, backend: b.backend })')"
  code=$(execute "$PORT_A" "$NETWORK")
  check "a) no network in the jail: connecting to the server's loopback port gives ENETUNREACH" \
    "200 101" "$code $(jget "$WORK/body.json" 'b.result')"
  # Nothing of the server's environment (the image's ENV, podman's, the secret) reaches a script.
  code=$(execute "$PORT_A" "import os
def main():
    leaked = sorted(k for k, v in os.environ.items()
                    if k in ('NODE_ENV', 'PORT', 'HOSTNAME', 'container', 'PYSANDBOX_TEST_SECRET') or '$SECRET' in v)
    return [os.getuid(), leaked]
")
  check "a) the script runs as uid 65534 and sees none of the server's environment" '[65534,[]]' "$(jget "$WORK/body.json" 'b.result')"
  code=$(execute "$PORT_A" $'import numpy, pandas\ndef main():\n    return int(pandas.DataFrame({"a": numpy.arange(10)})["a"].sum())\n')
  check "a) numpy and pandas work" "200 45" "$code $(jget "$WORK/body.json" 'b.result')"

  if podman healthcheck run "$name" >/dev/null 2>&1; then pass "a) the image's HEALTHCHECK passes"; else fail "a) the image's HEALTHCHECK passes"; fi
  # Every file the server reads at run time is in the image: the playground page and the docs.
  check "a) GET / (the playground page) 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$url/")"
  check "a) GET /openapi.json 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$url/openapi.json")"

  # The integration suite against the container (the other backends' files skip themselves).
  if [ -d test/integration ]; then
    log "a) PYSANDBOX_URL=$url npx tap test/integration"
    local rc summary total pass_count fail_count
    PYSANDBOX_URL=$url PYSANDBOX_TEST_SECRET=$SECRET PYSANDBOX_SERVER_ROOT=/app \
      npx tap --disable-coverage --reporter=tap test/integration >"$WORK/tap.log" 2>&1
    rc=$?
    summary=$(grep -E '^# \{ total:' "$WORK/tap.log" | tail -1)
    total=$(sed -nE 's/.*total: ([0-9]+).*/\1/p' <<<"$summary")
    pass_count=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
    fail_count=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
    printf '        tap: %s (exit %s)\n' "${summary:-no summary}" "$rc"
    passed=$((passed + ${pass_count:-0}))
    failed=$((failed + ${fail_count:-0}))
    if [ "$rc" -ne 0 ] || [ -z "$summary" ]; then
      grep -E '^\s*not ok' "$WORK/tap.log" | head -20
      [ "${fail_count:-0}" -gt 0 ] || fail "a) the integration suite exits 0" "$(tail -20 "$WORK/tap.log")"
    fi
    [ -z "$total" ] || printf '        (%s of the suite'"'"'s %s assertions counted above)\n' "$((${pass_count:-0} + ${fail_count:-0}))" "$total"
  else
    printf '        test/integration is missing: the curl checks above stand in for it\n'
  fi

  # SIGTERM through tini: the server closes and exits 0, well inside the stop timeout.
  local stop_start stopped_in
  stop_start=$(date +%s)
  podman stop -t 30 "$name" >/dev/null 2>&1
  stopped_in=$(($(date +%s) - stop_start))
  check "a) podman stop: exit code 0" 0 "$(podman inspect "$name" --format '{{.State.ExitCode}}' 2>/dev/null)"
  if [ "$stopped_in" -lt 20 ]; then pass "a) podman stop: closed in ${stopped_in} s"; else fail "a) podman stop: closed in ${stopped_in} s (SIGTERM not handled?)"; fi
}

# --- b) no flags: fails closed; c) no flags, direct permitted -------------------------------------
test_no_flags() {
  local b="pysandbox-test-b-$$" c="pysandbox-test-c-$$" code seconds
  log "b) podman run without flags (port $PORT_B); c) the same with SANDBOX_BACKENDS=nsjail,unshare,direct (port $PORT_C)"
  start "$b" "$PORT_B" || die "b) the container starts" "$(cat "$WORK/$b.run.err")"
  start "$c" "$PORT_C" -e SANDBOX_BACKENDS=nsjail,unshare,direct || die "c) the container starts" "$(cat "$WORK/$c.run.err")"

  if seconds=$(wait_for "$PORT_B" /healthz 200); then pass "b) the service starts without privileges (/healthz 200 after ${seconds} s)"
  else die "b) the service starts without privileges" "$(show_logs "$b")"; fi
  code=$(http GET "http://127.0.0.1:$PORT_B/readyz")
  check "b) /readyz 503" 503 "$code"
  check "b) /readyz: no backend, status unavailable" "null unavailable" "$(jget "$WORK/body.json" 'String(b.backend) + " " + b.status')"
  check "b) /readyz: nsjail and unshare probed and failed, direct not probed" '[["nsjail",false],["unshare",false]]' \
    "$(jget "$WORK/body.json" 'b.probes.map(p => [p.backend, p.ok])')"
  check "b) /readyz: every probe gives a reason" true "$(jget "$WORK/body.json" 'b.probes.every(p => typeof p.reason === "string" && p.reason.length > 0)')"
  printf '        probe reasons:\n'
  jget "$WORK/body.json" 'b.probes.map(p => "          " + p.backend + ": " + p.reason.replace(/\n/g, " | ")).join("\n")' | cut -c1-1200
  echo
  code=$(execute "$PORT_B" "$HELLO")
  check "b) /execute 503 SANDBOX_UNAVAILABLE" "503 SANDBOX_UNAVAILABLE" "$code $(jget "$WORK/body.json" 'b.code')"

  if seconds=$(wait_for "$PORT_C" /readyz 200); then pass "c) /readyz 200 after ${seconds} s"
  else http GET "http://127.0.0.1:$PORT_C/readyz" >/dev/null; die "c) /readyz 200" "$(cat "$WORK/body.json")"; fi
  http GET "http://127.0.0.1:$PORT_C/readyz" >/dev/null
  check "c) /readyz says direct, with a warning" "direct true" \
    "$(jget "$WORK/body.json" 'b.backend + " " + /WITHOUT ISOLATION/.test(b.warning)')"
  code=$(execute "$PORT_C" "$HELLO")
  check "c) /execute: 200, \"backend\": \"direct\"" "200 direct" "$code $(jget "$WORK/body.json" 'b.backend')"
  # The network check of a) is not vacuous: without a sandbox it connects.
  code=$(execute "$PORT_C" "$NETWORK")
  check "c) without isolation the network check connects (the check of a) can fail)" "200 connected" "$code $(jget "$WORK/body.json" 'b.result')"
  podman logs "$c" >"$WORK/$c.log" 2>&1
  if grep -q 'serving with the DIRECT backend' "$WORK/$c.log"; then pass "c) the log warns about direct"; else fail "c) the log warns about direct"; fi
}

# --- d) the least privilege, as deploy/k8s grants it; e) each capability of it is needed ------------
# d) is the Kubernetes pod of deploy/k8s/deployment.yaml in Podman terms: every capability
# dropped but SYS_ADMIN, SETUID and SETGID; /proc unmasked; a read-only root; its own user
# namespace of 65536 ids (hostUsers: false), hence SANDBOX_UID_BASE below 65536.
# e) drops one of the three capabilities at a time: nsjail's probe must fail each time.
test_least_privilege() {
  local least=(--no-healthcheck --cap-drop ALL --security-opt systempaths=unconfined -e SANDBOX_BACKEND=nsjail)
  local d="pysandbox-test-d-$$" port=$((PORT_A + 3)) seconds code cap i=0
  log "d) --cap-drop ALL --cap-add SYS_ADMIN,SETUID,SETGID, read-only root, own user namespace (port $port); e) one capability fewer"
  start "$d" "$port" "${least[@]}" --cap-add SYS_ADMIN,SETUID,SETGID --read-only --read-only-tmpfs=false \
    --uidmap 0:400000:65536 --gidmap 0:400000:65536 -e SANDBOX_UID_BASE=60000 ||
    fail "d) the container starts" "$(cat "$WORK/$d.run.err")"
  local missing=()
  for cap in SYS_ADMIN SETUID SETGID; do
    i=$((i + 1))
    local others
    others=$(printf '%s\n' SYS_ADMIN SETUID SETGID | grep -vx "$cap" | paste -sd, -)
    start "pysandbox-test-e$i-$$" $((port + i)) "${least[@]}" --cap-add "$others" ||
      fail "e) the container without $cap starts" "$(cat "$WORK/pysandbox-test-e$i-$$.run.err")"
    missing+=("$cap")
  done

  if seconds=$(wait_for "$port" /readyz 200); then pass "d) /readyz 200 with nsjail after ${seconds} s"
  else http GET "http://127.0.0.1:$port/readyz" >/dev/null; fail "d) /readyz 200 with nsjail" "$(cat "$WORK/body.json")"; fi
  http GET "http://127.0.0.1:$port/readyz" >/dev/null
  check "d) warm sandboxes on (the zygote's uid fits the 65536 ids)" zygote "$(jget "$WORK/body.json" 'b.probes.at(-1).features.warm')"
  # Its cgroup is not delegated to its user namespace: /readyz must say a run's total is unbounded.
  check "d) /readyz declares the exposure: memory per process only" "rlimit per process" \
    "$(jget "$WORK/body.json" 'b.probes.at(-1).features.memory + " " + b.probes.at(-1).features.memoryBound.slice(0, 11)')"
  code=$(execute "$port" "$HELLO")
  check "d) the README's example runs in nsjail" "200 nsjail" "$code $(jget "$WORK/body.json" 'b.backend')"
  code=$(execute "$port" "$NETWORK")
  check "d) no network in the jail" "200 101" "$code $(jget "$WORK/body.json" 'b.result')"

  i=0
  for cap in "${missing[@]}"; do
    i=$((i + 1))
    if ! wait_for $((port + i)) /healthz 200 >/dev/null; then fail "e) without $cap: the service starts"; continue; fi
    code=$(http GET "http://127.0.0.1:$((port + i))/readyz")
    check "e) without $cap the nsjail probe fails (/readyz 503)" 503 "$code"
    printf '        %s\n' "$(jget "$WORK/body.json" 'b.probes[0] && b.probes[0].reason.replace(/\n/g, " | ").replace(/\[[EF]\]\[[^\]]*\]\[\d+\] /g, "").slice(-300)')"
  done
}

setup_podman
build_image
podman image exists "$IMAGE" || die "the image $IMAGE exists"
printf '        image %s: %s\n' "$IMAGE" "$(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }')"
test_documented_flags
test_no_flags
test_least_privilege
finish
