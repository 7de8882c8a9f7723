#!/usr/bin/env bash
# Build fovea's installable packages into dist/, and (with --check) install and run them.
#
#   tools/package.sh deb   [--target TRIPLE]   dist/fovea_<version>_<arch>.deb (amd64 or arm64)
#   tools/package.sh zip                       dist/fovea-<version>-windows-x86_64.zip
#   tools/package.sh check-deb                 install the .deb, run the installed fovea on the
#                                              demo case under Xvfb, check its window, uninstall
#   tools/package.sh check-deb-arm             extract the arm64 .deb and answer the demo case
#                                              with its fovea under qemu-aarch64
#   tools/package.sh check-zip                 unzip the Windows package elsewhere and answer the
#                                              demo case with fovea.exe under Wine
#   tools/package.sh all                       deb + check-deb (what .ci/run does)
#
# The .deb is built with dpkg-deb from a staged tree (what cargo-deb does, without a tool to
# install): /usr/bin/fovea, the demo models and cases in /usr/share/fovea/assets (fovea finds
# them from /usr/bin/fovea; src/demo/assets.rs), a desktop entry and the icon. The zip holds
# fovea.exe with assets\ beside it (found from the executable the same way).
#
# check-deb installs with apt-get (dependencies resolved) when root or sudo is at hand, and
# removes the package afterwards, checking no file of it is left; without root it extracts the
# package into a scratch root instead and runs it from there (same layout, no dpkg database).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
mkdir -p dist

source tools/apt.sh
can_be_root() { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }

# The Debian architecture of a Rust target triple.
deb_arch() {
  case "$1" in
    x86_64-*) echo amd64 ;;
    aarch64-*) echo arm64 ;;
    *) echo "tools/package.sh: no Debian architecture for $1" >&2; exit 2 ;;
  esac
}

build_deb() {
  local target="${1:-$(rustc -vV | sed -n 's/^host: //p')}"
  local arch; arch="$(deb_arch "${target}")"
  local host; host="$(rustc -vV | sed -n 's/^host: //p')"
  local binary
  if [ "${target}" = "${host}" ]; then
    cargo build --release --locked
    binary=target/release/fovea
  else
    env "$(cross_env "${target}")" cargo build --release --locked --target "${target}"
    binary="target/${target}/release/fovea"
  fi
  local stage; stage="$(mktemp -d)"
  trap 'rm -rf "${stage}"' RETURN
  local root="${stage}/fovea_${version}_${arch}"
  install -D -m 0755 "${binary}" "${root}/usr/bin/fovea"
  strip_for "${target}" "${root}/usr/bin/fovea"
  mkdir -p "${root}/usr/share/fovea"
  cp -r assets "${root}/usr/share/fovea/assets"
  find "${root}/usr/share/fovea" -type d -exec chmod 0755 {} +
  find "${root}/usr/share/fovea" -type f -exec chmod 0644 {} +
  install -D -m 0644 assets/icon/fovea.png "${root}/usr/share/icons/hicolor/256x256/apps/fovea.png"
  install -D -m 0644 /dev/stdin "${root}/usr/share/applications/fovea.desktop" <<'EOF'
[Desktop Entry]
Type=Application
Name=fovea
GenericName=Medical MLLM grounding viewer
Comment=See where a medical multimodal LLM looks, and fix the answer when it looks in the wrong place
Exec=fovea %f
Icon=fovea
Terminal=false
Categories=Science;MedicalSoftware;Education;
MimeType=application/dicom;image/png;image/jpeg;image/tiff;image/bmp;
Keywords=DICOM;radiology;attention;VGRefine;LLM;
StartupWMClass=fovea
EOF
  install -D -m 0644 /dev/stdin "${root}/usr/share/doc/fovea/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fovea
Files: *
License: MIT OR Apache-2.0
EOF
  install -m 0644 README.md "${root}/usr/share/doc/fovea/README.md"
  # glibc: the newest symbol version the binary needs.
  local glibc
  local objdump=objdump
  [[ "${target}" == aarch64-* ]] && objdump=aarch64-linux-gnu-objdump
  glibc="$("${objdump}" -T "${root}/usr/bin/fovea" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
  local size; size="$(du -sk "${root}/usr" | cut -f1)"
  mkdir -p "${root}/DEBIAN"
  # winit and wgpu load the X11/Wayland and Vulkan/GL libraries at run time, so they are
  # named here rather than found by dpkg-shlibdeps.
  cat > "${root}/DEBIAN/control" <<EOF
Package: fovea
Version: ${version}
Architecture: ${arch}
Maintainer: fovea developers <fovea@localhost>
Installed-Size: ${size}
Depends: libc6 (>= ${glibc:-2.31}), libgcc-s1, libx11-6, libx11-xcb1, libxcursor1, libxi6, libxrandr2, libxkbcommon0, libxkbcommon-x11-0, libvulkan1 | libegl1
Recommends: mesa-vulkan-drivers
Section: science
Priority: optional
Description: see where a medical multimodal LLM looks, and fix its answer
 fovea opens DICOM and PNG images, runs a medical multimodal LLM (HuatuoGPT-Vision,
 LLaVA-Med, Qwen2.5-VL models such as Lingshu, Qwen3-VL, MedGemma) offline, shows the
 attention of every head from the answer token to the image, compares it with hand-drawn
 regions and runs VGRefine (attention triage and knockout). A demo model and teaching
 cases are included; fovea never downloads weights.
EOF
  (cd "${root}" && find usr -type f -exec md5sum {} + > DEBIAN/md5sums)
  local out="dist/fovea_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "${root}" "${out}" >/dev/null
  echo "tools/package.sh: built ${out} ($(du -h "${out}" | cut -f1))"
}

strip_for() {
  case "$1" in
    aarch64-*) aarch64-linux-gnu-strip "$2" ;;
    *-windows-gnu) x86_64-w64-mingw32-strip "$2" ;;
    *) strip "$2" ;;
  esac
}

# The cross linker settings of tools/cross.sh, for one target.
cross_env() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc ;;
    *) echo FOVEA_NO_CROSS_ENV=1 ;;
  esac
}

build_zip() {
  local target=x86_64-pc-windows-gnu
  apt_install_missing tools/package.sh zip unzip
  cargo build --release --locked --target "${target}"
  local stage; stage="$(mktemp -d)"
  trap 'rm -rf "${stage}"' RETURN
  local root="${stage}/fovea-${version}"
  mkdir -p "${root}"
  install -m 0755 "target/${target}/release/fovea.exe" "${root}/fovea.exe"
  strip_for "${target}" "${root}/fovea.exe"
  cp -r assets "${root}/assets"
  sed 's/$/\r/' > "${root}/README.txt" <<EOF
fovea ${version} for Windows (x86-64)

Double-click fovea.exe to open the app on a bundled demo case with the bundled demo model
(assets\\demo-model); nothing is downloaded. Keep the assets folder beside fovea.exe.
fovea.exe is also the command line, so Windows opens a console window with it; the app closes
that console as it starts (started from a terminal, it keeps printing there).

From a terminal:
  fovea.exe                          the app
  fovea.exe IMAGE.dcm --model DIR    the app on your image with your checkpoint
  fovea.exe inspect --help           the command line (records, VGRefine, causal maps)

Needs Windows 10 or newer, 64-bit, and a GPU driver with Vulkan, DirectX 12 or OpenGL for
the window. Settings and sessions live in %APPDATA%\\fovea, the weight cache in
%LOCALAPPDATA%\\fovea. License: MIT OR Apache-2.0.
EOF
  local out="dist/fovea-${version}-windows-x86_64.zip"
  rm -f "${out}"
  (cd "${stage}" && zip -q -r -9 "${OLDPWD}/${out}" "fovea-${version}")
  echo "tools/package.sh: built ${out} ($(du -h "${out}" | cut -f1))"
}

# Install the .deb, start the installed fovea on the demo case under Xvfb, save its window,
# check the window (tests/installed_app.rs), uninstall and check nothing is left.
check_deb() {
  local deb; deb="dist/fovea_${version}_$(dpkg --print-architecture).deb"
  [ -f "${deb}" ] || { echo "tools/package.sh: no ${deb}: run tools/package.sh deb first" >&2; exit 2; }
  local work; work="$(mktemp -d)"
  local fovea installed=0
  if can_be_root && command -v apt-get >/dev/null; then
    if dpkg-query -W fovea >/dev/null 2>&1; then
      echo "tools/package.sh: a fovea package is installed already; remove it first (dpkg -r fovea)" >&2
      exit 2
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "./${deb}" >/dev/null
    installed=1
    fovea="$(command -v fovea)"
    [ "${fovea}" = /usr/bin/fovea ] || { echo "check-deb: fovea is at ${fovea}, not /usr/bin/fovea" >&2; exit 1; }
    echo "check-deb: installed $(dpkg-query -W -f='${Package} ${Version} ${Architecture}' fovea), $(dpkg -L fovea | wc -l) paths"
  else
    dpkg-deb -x "${deb}" "${work}/root"
    fovea="${work}/root/usr/bin/fovea"
    echo "check-deb: not root: extracted into ${work}/root instead of installing"
  fi
  # A fresh user: no settings, no sessions, run from an unrelated folder, no FOVEA_ASSETS.
  local home="${work}/home"
  mkdir -p "${home}"
  local started; started=$(date +%s%N)
  local line
  line="$(cd "${work}" && env -u FOVEA_ASSETS HOME="${home}" XDG_DATA_HOME= XDG_CACHE_HOME= XDG_CONFIG_HOME= \
    timeout 300 xvfb-run -a -s "-screen 0 1600x1000x24" "${fovea}" --screenshot "${work}/window.png" 2>"${work}/stderr")" || {
    echo "check-deb: the installed fovea failed:" >&2; cat "${work}/stderr" >&2; echo "${line:-}" >&2; exit 1; }
  echo "check-deb: ${line} ($(( ($(date +%s%N) - started) / 1000000 )) ms)"
  local assets
  if [ "${installed}" = 1 ]; then assets=/usr/share/fovea/assets; else assets="${work}/root/usr/share/fovea/assets"; fi
  grep -q "model ${assets}/demo-model" <<<"${line}" || {
    echo "check-deb: the installed fovea did not load the installed demo model (${assets}/demo-model)" >&2; exit 1; }
  # A case that cannot run (no such model) ends with status 2 and a message naming it.
  if (cd "${work}" && env -u FOVEA_ASSETS HOME="${home}" timeout 120 xvfb-run -a "${fovea}" \
        --model "${work}/no-such-model" --screenshot "${work}/failed.png" >/dev/null 2>"${work}/failed"); then
    echo "check-deb: fovea --screenshot with a missing model exited 0" >&2; exit 1
  fi
  grep -q "no-such-model" "${work}/failed" || { echo "check-deb: the error does not name the model folder:" >&2; cat "${work}/failed" >&2; exit 1; }
  echo "check-deb: a missing model is refused: $(grep -m1 'no-such-model' "${work}/failed")"
  FOVEA_INSTALLED_WINDOW="${work}/window.png" cargo test --locked -q --test installed_app -- --ignored 2>&1 | tail -3
  mkdir -p dist/check && cp "${work}/window.png" dist/check/installed-window.png
  if [ "${installed}" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive as_root apt-get purge -y -qq fovea >/dev/null
    local left=()
    for path in /usr/bin/fovea /usr/share/fovea /usr/share/applications/fovea.desktop \
                /usr/share/icons/hicolor/256x256/apps/fovea.png /usr/share/doc/fovea; do
      [ -e "${path}" ] && left+=("${path}")
    done
    if [ ${#left[@]} -gt 0 ] || dpkg-query -W fovea >/dev/null 2>&1; then
      echo "check-deb: uninstalling left ${left[*]:-the package registered}" >&2; exit 1
    fi
    echo "check-deb: uninstalled; no file of the package is left"
  fi
  rm -rf "${work}"
}

# Answer the first case of CASES (a cases.jsonl) with `"$@" inspect`, run in the folder WORK
# with no FOVEA_ASSETS and HOME=WORK, so nothing of the source tree or the user is found; the
# record is WORK/record.json. Prints the record's "answer" field; WHO names the check in errors.
answer_first_case() {
  local who="$1" cases="$2" work="$3"; shift 3
  local image question
  image="$(head -1 "${cases}" | sed 's/.*"image": *"\([^"]*\)".*/\1/')"
  question="$(head -1 "${cases}" | sed 's/.*"question": *"\([^"]*\)".*/\1/')"
  (cd "${work}" && env -u FOVEA_ASSETS HOME="${work}" timeout 600 "$@" inspect \
     --image "$(dirname "${cases}")/${image}" --question "${question}" --json record.json \
     >/dev/null 2>"${work}/stderr") || {
    echo "${who}: fovea failed:" >&2; cat "${work}/stderr" >&2; exit 1; }
  grep -o '"answer": *"[^"]*"' "${work}/record.json" | head -1
}

# Unzip the Windows package into a scratch folder and answer the demo case with fovea.exe under
# Wine (the source tree's assets hidden by running from the copy, which must be the one used).
check_zip() {
  local zip="dist/fovea-${version}-windows-x86_64.zip"
  [ -f "${zip}" ] || { echo "tools/package.sh: no ${zip}: run tools/package.sh zip first" >&2; exit 2; }
  local work; work="$(mktemp -d)"
  unzip -q "${zip}" -d "${work}"
  local root="${work}/fovea-${version}"
  for need in fovea.exe README.txt assets/demo-model/config.json assets/demo-model/model.safetensors \
              assets/demo-model/tokenizer.json assets/cases/cases.jsonl; do
    [ -f "${root}/${need}" ] || { echo "check-zip: the zip lacks ${need}" >&2; exit 1; }
  done
  [ ! -e "${root}/bcryptprimitives.dll" ] || { echo "check-zip: the zip carries the Wine test shim" >&2; exit 1; }
  # Wine 8 lacks bcryptprimitives.dll (real Windows has it): the test shim goes beside the
  # unzipped copy only (tools/cross.sh builds it).
  local prefix; prefix="$(bash tools/cross.sh wine-prefix)"
  bash tools/cross.sh shim >/dev/null
  cp "target/x86_64-pc-windows-gnu/shim/bcryptprimitives.dll" "${root}/"
  local started; started=$(date +%s%N)
  local answer model
  answer="$(answer_first_case check-zip "${root}/assets/cases/cases.jsonl" "${work}" \
    env WINEDEBUG=-all WINEPREFIX="${prefix}" wine "${root}/fovea.exe")"
  model="$(grep -o '"path": *"[^"]*demo-model"' "${work}/record.json" | head -1)"
  [ -n "${answer}" ] || { echo "check-zip: no answer in the record" >&2; exit 1; }
  # The model must be the zip's own (a Windows path ending in fovea-<version>\assets\demo-model).
  grep -q "fovea-${version}\\\\\\\\assets\\\\\\\\demo-model" <<<"${model}" || {
    echo "check-zip: fovea.exe did not load the zip's demo model: ${model}" >&2; exit 1; }
  echo "check-zip: fovea.exe answered the demo case under Wine from the unzipped folder in $(( ($(date +%s%N) - started) / 1000000 )) ms: ${answer}, model ${model#*: }"
  rm -rf "${work}"
}

# The arm64 .deb on this x86-64 machine: extract it into a scratch root (dpkg will not install
# a foreign architecture's package without multiarch) and answer the demo case with the
# extracted /usr/bin/fovea under qemu-aarch64, from another folder, with no FOVEA_ASSETS; the
# record must name the extracted /usr/share/fovea/assets/demo-model.
check_deb_arm() {
  local deb="dist/fovea_${version}_arm64.deb"
  [ -f "${deb}" ] || { echo "tools/package.sh: no ${deb}: run tools/package.sh deb --target aarch64-unknown-linux-gnu" >&2; exit 2; }
  local work; work="$(mktemp -d)"
  dpkg-deb -x "${deb}" "${work}/root"
  file "${work}/root/usr/bin/fovea" | grep -q "ARM aarch64" || { echo "check-deb-arm: not an arm64 binary" >&2; exit 1; }
  local started; started=$(date +%s%N)
  local answer
  answer="$(answer_first_case check-deb-arm "${work}/root/usr/share/fovea/assets/cases/cases.jsonl" \
    "${work}" qemu-aarch64 -L /usr/aarch64-linux-gnu "${work}/root/usr/bin/fovea")"
  grep -q "\"path\": *\"${work}/root/usr/share/fovea/assets/demo-model\"" "${work}/record.json" || {
    echo "check-deb-arm: the extracted fovea did not load the package's demo model" >&2; exit 1; }
  echo "check-deb-arm: the arm64 package's fovea answered the demo case under qemu in $(( ($(date +%s%N) - started) / 1000000 )) ms: ${answer}, model from the package"
  rm -rf "${work}"
}

case "${1:-}" in
  deb) shift; [ "${1:-}" = --target ] && build_deb "$2" || build_deb ;;
  zip) build_zip ;;
  check-deb) check_deb ;;
  check-deb-arm) check_deb_arm ;;
  check-zip) check_zip ;;
  all) build_deb; check_deb ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
