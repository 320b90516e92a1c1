#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh demo   set everything up and run the whole chain end to end
#   ./dev.sh test   set up everything the tests need and run them
#   ./dev.sh setup  only set up (system packages, .venv, .venv-tflite)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=${EDGE_VENV:-$ROOT/.venv}
TFLITE_VENV=${EDGE_TFLITE_VENV:-$ROOT/.venv-tflite}

say() { printf '\n== %s\n' "$*" >&2; }

# python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good: GStreamer's RTSP server for the RTSP
# camera in tests/agent/sources (run by the system python3, which has the gi bindings)
apt_packages=(mosquitto mosquitto-clients qemu-user-static mmdebstrap mtools dosfstools e2fsprogs fdisk
              openssh-server openssh-client chromium
              python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)

setup_system() {
  local missing=()
  for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing system packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ONNX2TF_VERSION=1.29.24  # the last release for Python 3.11 (2.x needs 3.12)

setup_python() {
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
  say "installing the toolkit with host, agent, dev, camera and onnx extras into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # camera: OpenCV (opencv-python-headless) for the stream and video sources and their tests;
  # onnx: edge-convert's ONNX input (onnx2tf below)
  "$VENV/bin/python" -m pip install -q -e ".[host,agent,dev,camera,onnx]"
  # onnx2tf pins tensorflow 2.19 / numpy 1.26 in its metadata: without --no-deps pip would downgrade the
  # host extra. What it really needs at run time is in the [onnx] extra (see pyproject.toml).
  "$VENV/bin/python" -m pip install -q --no-deps "onnx2tf==$ONNX2TF_VERSION"
  # The legacy runtime needs numpy<2, so it lives in a venv of its own.
  [ -x "$TFLITE_VENV/bin/python" ] || { say "creating $TFLITE_VENV"; "$PY" -m venv "$TFLITE_VENV"; }
  say "installing the agent with tflite-runtime 2.14 (numpy<2) into $TFLITE_VENV"
  "$TFLITE_VENV/bin/python" -m pip install -q --upgrade pip
  "$TFLITE_VENV/bin/python" -m pip install -q -e ".[tflite-runtime]" pytest pytest-timeout
}

cmd=${1:-test}; shift || true
case "$cmd" in
  setup) setup_system; setup_python ;;
  test)
    setup_system; setup_python
    export EDGE_TFLITE_RUNTIME_PYTHON="$TFLITE_VENV/bin/python"
    say "static checks (ruff, mypy)"
    "$VENV/bin/python" -m ruff format --check edge converter tests benchmarks tools
    "$VENV/bin/python" -m ruff check edge converter tests benchmarks tools
    "$VENV/bin/python" -m mypy edge converter
    say "running the tests"
    exec "$VENV/bin/python" -m pytest "$@" ;;
  demo)
    setup_system; setup_python
    # edge-demo starts mosquitto when it is on PATH; Debian installs it in /usr/sbin
    PATH="$PATH:/usr/sbin:/usr/local/sbin" exec "$VENV/bin/edge-demo" "$@" ;;
  *) echo "usage: ./dev.sh [setup|test|demo] [args...]" >&2; exit 2 ;;
esac
