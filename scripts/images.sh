#!/usr/bin/env bash
# Build the RecLoRA images from infra/docker/ (what `make images` runs).
#
#   scripts/images.sh [cpu|gpu|spark|all]        (default: all, in that order)
#
# Names and tags come from params.yaml (pipeline.cpu_image, pipeline.gpu_image, pipeline.spark.image),
# as the pipeline uses them. The Spark image is built on the CPU image (build that first). The engine is docker where a Docker engine answers, podman otherwise
# (CONTAINER_ENGINE=docker|podman forces one). With podman:
#   - CONTAINERS_CONF points at infra/docker/containers.conf (runc, capped ulimits);
#   - the registry base image is made locally when it cannot be pulled (scripts/base-image.sh);
#   - the host's CA bundle, pip configuration and local wheel/index directories are mounted
#     read-only into the build, so pip reaches the package index and torch stays the CPU build
#     (when download.pytorch.org cannot be reached, pip's configuration picks the torch wheel).
# Layers are cached by the engine: a rebuild after a source edit only redoes the project layer.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
which="${1:-all}"
case "$which" in cpu|gpu|spark|all) ;; *) echo "usage: $0 [cpu|gpu|spark|all]" >&2; exit 2 ;; esac

PY="${PYTHON:-}"
[ -n "$PY" ] || { [ -x .venv/bin/python ] && PY=.venv/bin/python || PY=python3; }
param() {  # pipeline.<key>[.<key>] from params.yaml
  "$PY" -c "import sys, yaml; v = yaml.safe_load(open('params.yaml'))['pipeline']
for k in sys.argv[1].split('.'): v = v[k]
print(v)" "$1"
}

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
  elif command -v podman >/dev/null; then engine=podman
  else echo "error: neither a Docker engine nor podman is available (apt-get install podman buildah runc)" >&2; exit 2
  fi
fi
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/infra/docker/containers.conf}"

reachable() { "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=8)" "$1" >/dev/null 2>&1; }
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

build() {  # kind image
  local kind="$1" image="$2" file="infra/docker/Dockerfile.$1" args=()
  local version="${image##*:}"
  args+=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
  [ "$kind" != spark ] || args+=(--build-arg "BASE_IMAGE=$(param cpu_image)")  # our CPU image, built first
  if [ "$engine" = podman ]; then
    [ "$kind" = spark ] || scripts/base-image.sh "$(awk 'toupper($1)=="FROM"{print $2; exit}' "$file")"
    # HEALTHCHECK is a Docker-format field (OCI image configs drop it)
    args+=(--format docker --layers)
    local mounts=(/etc/ssl/certs/ca-certificates.crt /etc/pip.conf /etc/xdg/pip)
    local torch_url
    if [ "$kind" != gpu ]; then
      torch_url=https://download.pytorch.org/whl/cpu
      # the local pip configuration and what it points at: its torch+cpu wheel, the local index
      mounts+=("$HOME/.config/pip:/root/.config/pip" /opt/wheels /opt/pypi /opt/pypi-more)
      reachable "$torch_url/torch/" || args+=(--build-arg "TORCH_INDEX_URL=")
    else
      torch_url=https://download.pytorch.org/whl/cu128
      # PyPI's default Linux torch wheel is a CUDA build (its nvidia-* runtime wheels come with it)
      reachable "$torch_url/torch/" || args+=(--build-arg "TORCH_INDEX_URL=https://pypi.org/simple")
    fi
    local m src
    for m in "${mounts[@]}"; do
      src="${m%%:*}"
      [ -e "$src" ] || continue
      case "$m" in *:*) args+=(-v "$m:ro") ;; *) args+=(-v "$m:$m:ro") ;; esac
    done
  fi
  echo "building $image ($engine, $file)"
  local t0=$SECONDS
  "$engine" build -f "$file" -t "$image" "${args[@]}" .
  echo "built $image in $((SECONDS - t0)) s"
}

case "$which" in cpu|all) build cpu "$(param cpu_image)" ;; esac
case "$which" in gpu|all) build gpu "$(param gpu_image)" ;; esac
case "$which" in spark|all) build spark "$(param spark.image)" ;; esac
