#!/usr/bin/env bash
# fovea on Windows and ARM, from an x86-64 Debian machine: build, check, and run the tests under
# Wine (x86_64-pc-windows-gnu, Debian's mingw-w64) and qemu-user (aarch64-unknown-linux-gnu,
# Debian's gcc-aarch64-linux-gnu).
#
#   tools/cross.sh setup [--emulators]   install the cross toolchains (and Wine and qemu-user) (apt,
#                                        with sudo when not root) and the two Rust targets
#   tools/cross.sh check                 cargo check --all-targets for both targets (.ci/run)
#   tools/cross.sh test windows|arm [TEST...]
#                                        build the test binaries for the target and run them
#                                        under Wine or qemu (default: every test binary but
#                                        the ones listed in SKIP_* below, with the reason),
#                                        printing each binary's result and time
#   tools/cross.sh wine-prefix           make (once) and print the Wine prefix the tests use
#   tools/cross.sh shim                  build the ProcessPrng shim (below) and copy it beside
#                                        the Windows test programs
#
# Wine 8 (Debian 12) lacks bcryptprimitives.dll, whose ProcessPrng Rust's standard library
# imports on Windows (real Windows 10 and 11 have it). For the tests only, a shim DLL exporting
# ProcessPrng over RtlGenRandom is built here with mingw and put beside the test executables;
# it is never packaged (tools/package.sh zips fovea.exe and assets only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WIN=x86_64-pc-windows-gnu
ARM=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine

# Test binaries not run under emulation, and why.
# - app_ui: needs a window system and a Vulkan device (lavapipe) of the target's own.
# - slurm: submits a job array to Slurm, a Linux service.
# - architecture: reads the source tree and runs `cargo tree` (host tooling, not target code).
declare -A SKIP=(
  [app_ui]="renders the app with wgpu on lavapipe: no Vulkan device of the target here"
  [slurm]="submits a Slurm job array (a Linux service the emulated program cannot reach)"
  [architecture]="checks the source tree and runs cargo tree: host tooling, not target code"
)

source tools/apt.sh

setup() {
  apt_install_missing tools/cross.sh gcc-mingw-w64-x86-64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross "$@"
  rustup target add "${WIN}" "${ARM}" >/dev/null 2>&1 || rustup target add "${WIN}" "${ARM}"
}

wine_prefix() {
  local prefix="${PWD}/target/wine-prefix"
  if [ ! -f "${prefix}/system.reg" ]; then
    WINEPREFIX="${prefix}" WINEDEBUG=-all wineboot --init >/dev/null 2>&1 || true
    WINEPREFIX="${prefix}" wineserver -w 2>/dev/null || true
  fi
  echo "${prefix}"
}

# The ProcessPrng shim, built once, copied beside every executable of the Windows target.
shim() {
  local dir="target/${WIN}/shim"
  if [ ! -f "${dir}/bcryptprimitives.dll" ]; then
    mkdir -p "${dir}"
    cat > "${dir}/shim.c" <<'EOF'
/* Test harness only: ProcessPrng for Wine 8, which lacks bcryptprimitives.dll. */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom, advapi32 */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
  while (length > 0) {
    ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    length -= chunk;
  }
  return TRUE;
}
EOF
    x86_64-w64-mingw32-gcc -O2 -shared -o "${dir}/bcryptprimitives.dll" "${dir}/shim.c" -ladvapi32
  fi
  for profile in debug release; do
    for sub in "" /deps; do
      [ -d "target/${WIN}/${profile}${sub}" ] && cp "${dir}/bcryptprimitives.dll" "target/${WIN}/${profile}${sub}/"
    done
  done
  return 0
}

check() {
  local started
  for target in "${WIN}" "${ARM}"; do
    started=$(date +%s)
    cargo check --locked --all-targets --target "${target}"
    echo "tools/cross.sh: cargo check --all-targets --target ${target}: ok in $(( $(date +%s) - started )) s"
  done
}

run_tests() {
  local which="$1"; shift
  local target
  case "${which}" in
    windows) target="${WIN}" ;;
    arm)
      target="${ARM}"
      # What the tests spawn (the fovea binary) needs the same runner: qemu-user starts the
      # test binary only, and no binfmt handler is assumed (tests/common/bin.rs reads this).
      export FOVEA_TEST_RUNNER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER}"
      ;;
    *) echo "tools/cross.sh: test windows|arm" >&2; exit 2 ;;
  esac
  local started; started=$(date +%s)
  cargo test --locked --target "${target}" --no-run 2>&1 | tail -2
  echo "tools/cross.sh: built the ${which} test binaries in $(( $(date +%s) - started )) s"
  if [ "${which}" = windows ]; then
    shim
    export WINEPREFIX; WINEPREFIX="$(wine_prefix)"
    export WINEDEBUG=-all
  fi
  # One line per test binary: its name, passed/failed/ignored and seconds.
  local names=("$@")
  if [ ${#names[@]} = 0 ]; then
    names=(--lib)
    for file in tests/*.rs; do
      local name; name="$(basename "${file}" .rs)"
      if [ -n "${SKIP[${name}]:-}" ]; then
        echo "skip  ${name}: ${SKIP[${name}]}"
      else
        names+=("${name}")
      fi
    done
  fi
  local failed=0 total=0
  local log="target/${target}/cross-test.log"
  : > "${log}"; : > "${log}.failures"
  for name in "${names[@]}"; do
    local args=(--test "${name}")
    [ "${name}" = --lib ] && args=(--lib)
    local t0; t0=$(date +%s)
    local out
    if out="$(cargo test --locked --target "${target}" "${args[@]}" 2>&1)"; then
      status=ok
    else
      status=FAILED; failed=$((failed + 1))
    fi
    total=$((total + 1))
    local summary; summary="$(grep -E '^test result:' <<<"${out}" | tail -1 | sed 's/test result: //; s/; finished in.*//')"
    printf '%-6s %-22s %4d s  %s\n' "${status}" "${name#--}" "$(( $(date +%s) - t0 ))" "${summary}" | tee -a "${log}"
    if [ "${status}" = FAILED ]; then
      { echo "---- ${name}"; grep -E -A3 '^(---- |thread .* panicked|test .* FAILED)' <<<"${out}" | grep -v '^stack backtrace' | head -60; } >> "${log}.failures"
    fi
  done
  echo "tools/cross.sh: ${which}: $((total - failed)) of ${total} test binaries passed in $(( $(date +%s) - started )) s (failures: ${log}.failures)"
  [ "${failed}" = 0 ]
}

case "${1:-}" in
  setup) shift; if [ "${1:-}" = --emulators ]; then setup wine wine64 qemu-user; else setup; fi ;;
  check) check ;;
  test) shift; run_tests "$@" ;;
  wine-prefix) wine_prefix ;;
  shim) shim ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
