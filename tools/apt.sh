# Sourced by tools/test.sh, tools/cross.sh and tools/package.sh: install the Debian packages a
# script needs that are missing, with sudo when not root.
#
#   source tools/apt.sh
#   apt_install_missing "tools/x.sh" package...     # no-op when all are installed

# Run a command as root: directly when root, else with sudo; fail with a message otherwise.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "${APT_WHO:-tools}: this needs root or sudo: $*" >&2
    return 2
  fi
}

apt_install_missing() {
  local who="$1"; shift
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "${who}: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  APT_WHO="${who}" as_root apt-get update -qq || {
    echo "${who}: install these yourself: ${missing[*]}" >&2; return 2; }
  APT_WHO="${who}" as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
