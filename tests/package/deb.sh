#!/usr/bin/env bash
# Installs the .deb that scripts/package built, starts the installed app once the way a user
# would, under Xvfb (tests/e2e/standalone.test.mjs: a window titled "DocTune", no process of it
# listening on any socket), and removes the package again. Needs root or sudo (dpkg). Run:
#   scripts/package && tests/package/deb.sh            (the release .deb)
#   scripts/package --debug && tests/package/deb.sh --debug
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$ROOT"

PROFILE=release
[ "${1:-}" = "--debug" ] && PROFILE=debug
deb="$(ls -t "$CARGO_TARGET_DIR/$PROFILE"/bundle/deb/*.deb 2>/dev/null | head -1)"
[ -n "$deb" ] || { echo "no .deb in $CARGO_TARGET_DIR/$PROFILE/bundle/deb: run scripts/package ${1:-} first" >&2; exit 1; }
ensure_packages "${RUN_PKGS[@]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
pkg="$(dpkg-deb -f "$deb" Package)"
log "$(basename "$deb"): $(du -h "$deb" | cut -f1) ($(stat -c %s "$deb") bytes); depends: $(dpkg-deb -f "$deb" Depends)"
log "installing $pkg"
$sudo dpkg -i "$deb" || $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -f -y -qq
trap '$sudo dpkg -r "$pkg" >/dev/null' EXIT
bin="$(dpkg -L "$pkg" | grep '^/usr/bin/' | head -1)"
[ -x "$bin" ] || { echo "$pkg installed no program in /usr/bin" >&2; exit 1; }
log "installed $bin; starting it under Xvfb"
DOCTUNE_APP="$bin" xvfb-run -a -s "-screen 0 1280x800x24" \
  bash -c "source '$ROOT/scripts/lib.sh'; in_private_session node --test --test-reporter=spec tests/e2e/standalone.test.mjs"
log "the installed app opened its window and listened on nothing; removing $pkg"
