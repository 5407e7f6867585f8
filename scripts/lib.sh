# Shared by scripts/run and scripts/test: caches, and installing what a fresh Debian/Ubuntu
# machine with Rust and Node is missing. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DOCTUNE_CACHE:-$HOME/.cache/doctune}"
# One Cargo target folder outside the clone, reused by every build, test and CI run.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export npm_config_cache="${npm_config_cache:-$CACHE/npm}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TOOLS="$CACHE/tools"
mkdir -p "$CARGO_TARGET_DIR" "$npm_config_cache" "$TOOLS"

# Debian packages: to build Tauri 2 (WebKitGTK, GTK, D-Bus), and to run and test the window
# headless (Xvfb, WebKitWebDriver, a D-Bus session, GNOME Keyring).
BUILD_PKGS=(libwebkit2gtk-4.1-dev build-essential curl wget file libxdo-dev libssl-dev
  libayatana-appindicator3-dev librsvg2-dev libdbus-1-dev pkg-config)
RUN_PKGS=(xvfb xauth x11-utils webkit2gtk-driver dbus dbus-x11 gnome-keyring libsecret-tools)

log() { printf '\n==> %s\n' "$*" >&2; }

ensure_packages() {
  command -v dpkg-query >/dev/null || { log "not a Debian/Ubuntu system: install the packages in README.md yourself"; return 0; }
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing system packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_toolchains() {
  command -v cargo >/dev/null || { echo "Rust is required: https://rustup.rs" >&2; exit 1; }
  command -v npm >/dev/null || { echo "Node.js >= 20.19 with npm is required" >&2; exit 1; }
}

ensure_npm() {
  # npm ci only when package-lock.json changed since the last install.
  local stamp="$ROOT/node_modules/.doctune-lock-sha"
  local want
  want="$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "npm ci (cache: $npm_config_cache)"
    (cd "$ROOT" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
}

build_ui() {
  log "building the UI (ui/dist)"
  (cd "$ROOT/ui" && npx vite build --logLevel warn)
}

# Runs "$@" in a private D-Bus session with a throwaway, unlocked gnome-keyring (under private
# XDG folders), so tests use a real Secret Service without touching the user's keychain, and no
# daemon outlives the run. Set PRIVATE_HOME=1 to give the command a private HOME as well.
in_private_session() {
  local tmp rc=0
  tmp="$(mktemp -d)"
  mkdir -m 700 "$tmp/runtime"
  local home="$HOME"
  [ "${PRIVATE_HOME:-0}" = 1 ] && home="$tmp"
  CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
    HOME="$home" XDG_RUNTIME_DIR="$tmp/runtime" XDG_DATA_HOME="$tmp/data" XDG_CONFIG_HOME="$tmp/config" \
    dbus-run-session -- bash -c '
      eval "$(printf %s doctune-test | gnome-keyring-daemon --unlock --components=secrets)"
      export GNOME_KEYRING_CONTROL
      exec "$@"' _ "$@" || rc=$?
  remove_session_dir "$tmp"
  return $rc
}

# The app may activate xdg-document-portal, which mounts a FUSE file system at
# $XDG_RUNTIME_DIR/doc and unmounts it only as it exits after the session bus is gone: wait for
# that, then unmount lazily if it is still there. Cleanup never fails the run.
remove_session_dir() {
  local dir="$1" i
  for i in $(seq 1 50); do
    rm -rf "$dir" 2>/dev/null && return 0
    sleep 0.1
  done
  { fusermount -uz "$dir/runtime/doc" || umount -l "$dir/runtime/doc"; } 2>/dev/null
  rm -rf "$dir" 2>/dev/null || echo "note: could not remove $dir" >&2
  return 0
}

# Stage timing: `stage NAME cmd...` runs cmd and records how long it took.
STAGES=()
stage() {
  local name="$1"; shift
  local t0=$SECONDS
  log "$name"
  "$@"
  STAGES+=("$(printf '%-28s %5ss' "$name" $((SECONDS - t0)))")
}
print_stages() {
  printf '\nStage timings:\n' >&2
  printf '  %s\n' "${STAGES[@]}" >&2
}
