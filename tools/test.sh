#!/usr/bin/env bash
# The README's test command: set up what the tests need on a fresh Debian or Ubuntu machine,
# then run `cargo test --locked`. .ci/run calls it too, so a newcomer runs what CI runs.
#
# Why install rather than make every test pass without the packages: the app tests render the
# overlays with wgpu and compare them with committed snapshots. Without Mesa's Vulkan driver
# (lavapipe) wgpu falls back to GL, whose rasteriser and texture filtering differ in 1-2k
# pixels per snapshot; widening the tolerance until GL passes would also let real overlay
# bugs through. The exchange tests need dciodvfy (dicom3tools) and the job-array test needs
# Slurm. So this script installs exactly the Debian packages that are missing (with sudo when
# not root), fetches the pydicom test corpus (pixels are compared with pydicom's on every file)
# and runs the tests. Arguments go to `cargo test` (e.g. `tools/test.sh --test exchange`).
#
# Usage: tools/test.sh [cargo test arguments]     (from anywhere inside the repository)
# Environment: FOVEA_SKIP_SETUP=1 skips the package install (a machine set up another way).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Headless rendering (eframe/wgpu on lavapipe; rfd/winit dlopen the X11 and font libraries),
# python3-pip to fetch the pydicom corpus, Slurm + munge for the job-array test, dicom3tools
# for dciodvfy.
packages=(python3-pip xvfb mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0
          libgl1-mesa-dri libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcursor1 libxi6 libfontconfig1
          slurmctld slurmd slurm-client munge dicom3tools)

source tools/apt.sh

if [ "${FOVEA_SKIP_SETUP:-0}" != 1 ]; then
  if command -v dpkg-query >/dev/null 2>&1; then
    apt_install_missing tools/test.sh "${packages[@]}" || {
      echo "  (or set FOVEA_SKIP_SETUP=1 to run the tests without them)" >&2; exit 2; }
  else
    echo "tools/test.sh: not a Debian system: install Mesa's Vulkan driver (lavapipe), Xvfb, Slurm and" >&2
    echo "  dicom3tools by hand, or some app, Slurm and DICOM validation tests will fail or be skipped" >&2
  fi
  bash tools/fetch_pydicom_corpus.sh
fi

cargo test --locked "$@"
