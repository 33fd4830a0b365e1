# shellcheck shell=bash
# Shared bootstrap for kcl-daemon's launchers (bin/test, bin/fetch-kclpy, ...). Source it from a bash
# script; do not run it. It sets `set -euo pipefail` in the caller and exits the caller on failure.
#
# It brings three things up to date, each only when its inputs changed (a stamp file holds a hash of
# them), so a warm run costs a few hashes:
#   python  .venv (python3 >= 3.10) with `pip install -e '.[test]'`   stamp: .venv/.kcl-setup-stamp
#   node    tests/node/node_modules (npm install; Node.js >= 20)     stamp: node_modules/.kcl-setup-stamp
#   kclpy   the official amazon_kclpy (sdist from PyPI, unpacked, never installed: its setup.py
#           downloads jars) under vendor/                          marker: vendor/kclpy-<ver>/.complete
# Choose parts with KCL_ENV_PARTS (default "python node kclpy"). A missing or too old Node.js is a
# warning, not an error: only the kinesis-local/dynalite tests need it, and their fixtures say so.
#
# Exports: KCL_ROOT, KCL_PYTHON (the venv's python), PATH (.venv/bin first), and when set up:
#   KCL_TEST_NODE_MODULES  tests/node/node_modules
#   KCL_TEST_KCLPY_PATH    folder to put on PYTHONPATH to import amazon_kclpy (only that package)
#   KCL_TEST_KCLPY_SDIST   the whole unpacked sdist (samples/, test/ ...)
# Quiet when nothing changed; one line per step that does work; a failing step prints its log.

set -euo pipefail

KCL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KCL_ROOT

# Bump when the recipe below changes, so that existing stamps no longer match.
_KCL_RECIPE=1
_KCL_MIN_PYTHON="3.10"
_KCL_MIN_NODE=20 # dynalite 4 declares engines.node >= 20
_KCL_KCLPY_VERSION="3.2.0"
_KCL_KCLPY_SHA256="62e81cc84714c920fe6aa5d61837b298fe7e01f6326dcb564b12ab8e6c4aca4e"

_kcl_say() { printf 'kcl-daemon setup: %s\n' "$*" >&2; }

_kcl_die() {
  _kcl_say "ERROR: $*"
  exit 1
}

# Runs a command with its output sent to a log; on failure prints what failed and the log's tail.
_kcl_logged() {
  local what=$1
  shift
  local log
  log="$(mktemp "${TMPDIR:-/tmp}/kcl-setup.XXXXXX")"
  if ! "$@" >"$log" 2>&1; then
    _kcl_say "ERROR: $what failed: $*"
    tail -n 60 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}

_kcl_hash() {
  # Hashes the named files (missing ones count as empty) plus any literal strings after "--".
  {
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
      printf '== %s\n' "$1"
      [ -f "$1" ] && cat "$1"
      shift
    done
    [ $# -gt 0 ] && shift
    printf '%s\n' "$@"
  } | sha256sum | cut -d' ' -f1
}

_kcl_python_ok() {
  "$1" -c "import sys; sys.exit(0 if sys.version_info >= (${_KCL_MIN_PYTHON/./,}) else 1)" 2>/dev/null
}

_kcl_setup_python() {
  local venv="$KCL_ROOT/.venv"
  if [ ! -e "$venv/bin/python" ]; then
    local py="" cand
    for cand in "${KCL_BOOTSTRAP_PYTHON:-}" python3 python; do
      [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && _kcl_python_ok "$cand" && {
        py="$cand"
        break
      }
    done
    [ -n "$py" ] || _kcl_die "Python >= $_KCL_MIN_PYTHON is needed to create .venv, and none was found \
(tried python3, python; set KCL_BOOTSTRAP_PYTHON=/path/to/python3.X to choose one)."
    _kcl_say "creating .venv with $("$py" -c 'import sys; print(sys.executable)')"
    _kcl_logged "creating the virtualenv" "$py" -m venv "$venv"
    # The pip bundled with the interpreter can be years old; a current one resolves the test
    # dependencies much faster (measured: 2m30s -> under 1 min for a cold install).
    _kcl_logged "upgrading pip" "$venv/bin/python" -m pip install --disable-pip-version-check \
      --no-input -q -U pip
  fi
  local version
  version="$("$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" ||
    _kcl_die "$venv/bin/python does not run (a .venv copied from elsewhere?); remove .venv and rerun."
  _kcl_python_ok "$venv/bin/python" ||
    _kcl_die "$venv was made with Python < $_KCL_MIN_PYTHON; remove .venv and rerun with a newer python3."

  local stamp="$venv/.kcl-setup-stamp" want
  want="$(_kcl_hash "$KCL_ROOT/setup.cfg" "$KCL_ROOT/pyproject.toml" -- "recipe $_KCL_RECIPE" \
    "$version")"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    _kcl_say "installing kcl-daemon and its test dependencies into .venv (pip install -e '.[test]')"
    # --no-input: CI has no stdin. --no-compile: byte-compiling every installed module (botocore,
    # moto, sympy ...) is a large share of a cold install; Python compiles what is imported anyway.
    _kcl_logged "pip install" "$venv/bin/python" -m pip install --disable-pip-version-check \
      --no-input --no-compile -q -e "${KCL_ROOT}[test]"
    printf '%s\n' "$want" >"$stamp"
  fi
  KCL_PYTHON="$venv/bin/python"
  export KCL_PYTHON
  case ":$PATH:" in
  *":$venv/bin:"*) ;;
  *) PATH="$venv/bin:$PATH" ;;
  esac
  export PATH VIRTUAL_ENV="$venv"
}

_kcl_setup_node() {
  local dir="$KCL_ROOT/tests/node"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    _kcl_say "WARNING: Node.js/npm not found: the kinesis-local and dynalite tests need Node.js >= \
$_KCL_MIN_NODE with npm (Debian: apt-get install nodejs npm); they will be skipped (failed under CI)."
    return 0
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$major" -lt "$_KCL_MIN_NODE" ]; then
    _kcl_say "WARNING: Node.js $(node --version) is too old: the kinesis-local and dynalite tests need \
Node.js >= $_KCL_MIN_NODE; they will be skipped (failed under CI)."
    return 0
  fi
  local stamp="$dir/node_modules/.kcl-setup-stamp" want
  want="$(_kcl_hash "$dir/package.json" "$dir/package-lock.json" -- "recipe $_KCL_RECIPE" "node $major")"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    _kcl_say "installing the npm test servers into tests/node/node_modules (npm install)"
    # Install scripts stay off: classic-level's only builds a native addon that ships prebuilt,
    # and dynalite keeps its tables in memory-level anyway.
    _kcl_logged "npm install" npm --prefix "$dir" install --no-audit --no-fund --ignore-scripts \
      --loglevel=error
    # npm may have written package-lock.json: hash again so the next run matches.
    want="$(_kcl_hash "$dir/package.json" "$dir/package-lock.json" -- "recipe $_KCL_RECIPE" "node $major")"
    printf '%s\n' "$want" >"$stamp"
  fi
  KCL_TEST_NODE_MODULES="$dir/node_modules"
  export KCL_TEST_NODE_MODULES
}

_kcl_setup_kclpy() {
  local ver="$_KCL_KCLPY_VERSION"
  local vendor="$KCL_ROOT/vendor"
  local path_dir="$vendor/kclpy-$ver" sdist_dir="$vendor/amazon_kclpy-$ver"
  if [ ! -f "$path_dir/.complete" ]; then
    [ -n "${KCL_PYTHON:-}" ] || _kcl_die "the kclpy step needs the python step (KCL_ENV_PARTS)."
    local cache="${XDG_CACHE_HOME:-$HOME/.cache}/kcl-daemon"
    local tarball="$cache/amazon_kclpy-$ver.tar.gz"
    if [ ! -f "$tarball" ] || [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$_KCL_KCLPY_SHA256" ]; then
      _kcl_say "downloading the official amazon-kclpy $ver sdist for the compatibility tests"
      local dl
      dl="$(mktemp -d "${TMPDIR:-/tmp}/kcl-kclpy.XXXXXX")"
      # pip only downloads and reads metadata here; nothing is installed, so no jars are fetched.
      _kcl_logged "pip download amazon-kclpy==$ver" "$KCL_PYTHON" -m pip download \
        --disable-pip-version-check --no-input -q --no-deps --no-binary :all: \
        "amazon-kclpy==$ver" -d "$dl"
      local got="$dl/amazon_kclpy-$ver.tar.gz"
      [ -f "$got" ] || _kcl_die "pip download left no $(basename "$got") in $dl."
      [ "$(sha256sum "$got" | cut -d' ' -f1)" = "$_KCL_KCLPY_SHA256" ] ||
        _kcl_die "amazon_kclpy-$ver.tar.gz does not have the expected sha256 $_KCL_KCLPY_SHA256."
      mkdir -p "$cache"
      mv -f "$got" "$tarball"
      rm -rf "$dl"
    fi
    mkdir -p "$vendor"
    local tmp
    tmp="$(mktemp -d "$vendor/.unpack.XXXXXX")"
    _kcl_logged "unpacking $tarball" tar -xzf "$tarball" -C "$tmp" --no-same-owner
    [ -f "$tmp/amazon_kclpy-$ver/amazon_kclpy/kcl.py" ] ||
      _kcl_die "the amazon-kclpy sdist has no amazon_kclpy/kcl.py; its layout changed."
    # The import folder holds only the package: the sdist's top level also has samples/ and test/,
    # which would shadow other modules of those names on PYTHONPATH.
    mkdir -p "$tmp/path"
    cp -R "$tmp/amazon_kclpy-$ver/amazon_kclpy" "$tmp/path/"
    cp "$tmp/amazon_kclpy-$ver/LICENSE.txt" "$tmp/amazon_kclpy-$ver/NOTICE.txt" "$tmp/path/"
    touch "$tmp/path/.complete"
    rm -rf "$sdist_dir" "$path_dir"
    mv "$tmp/amazon_kclpy-$ver" "$sdist_dir"
    mv "$tmp/path" "$path_dir"
    rm -rf "$tmp"
  fi
  KCL_TEST_KCLPY_PATH="$path_dir"
  KCL_TEST_KCLPY_SDIST="$sdist_dir"
  export KCL_TEST_KCLPY_PATH KCL_TEST_KCLPY_SDIST
}

_kcl_setup() {
  local parts=" ${KCL_ENV_PARTS:-python node kclpy} "
  mkdir -p "$KCL_ROOT/vendor"
  # Several people (and CI) may run this in one tree at once: one setup at a time.
  local lock_fd
  exec {lock_fd}>"$KCL_ROOT/vendor/.setup.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 900 "$lock_fd" || _kcl_die "another setup held vendor/.setup.lock for 15 minutes."
  fi
  case "$parts" in *" python "*) _kcl_setup_python ;; esac
  case "$parts" in *" node "*) _kcl_setup_node ;; esac
  case "$parts" in *" kclpy "*) _kcl_setup_kclpy ;; esac
  exec {lock_fd}>&-
}

_kcl_setup
