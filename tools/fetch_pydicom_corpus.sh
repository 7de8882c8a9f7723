#!/usr/bin/env bash
# Download the pydicom 3.0.2 wheel from PyPI and extract every file under
# pydicom/data/test_files/ (recursively, keeping sub-folders) into
# tests/data/pydicom-corpus/ (git-ignored).
#
# Idempotent: if tests/data/pydicom-corpus/.complete exists and names the same
# pydicom version, nothing is done.
#
# Usage: tools/fetch_pydicom_corpus.sh        (from anywhere inside the repo)
# Needs: python3 with pip (Debian: apt-get install python3 python3-pip).
set -euo pipefail

PYDICOM_VERSION="3.0.2"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${REPO_ROOT}/tests/data/pydicom-corpus"
MARKER="${DEST}/.complete"

if [[ -f "${MARKER}" ]] && grep -qx "pydicom==${PYDICOM_VERSION}" "${MARKER}"; then
    echo "pydicom corpus already complete in ${DEST} ($(sed -n 2p "${MARKER}")); nothing to do."
    exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "pydicom==${PYDICOM_VERSION}" -d "${TMP}"

WHEEL="$(ls "${TMP}"/pydicom-"${PYDICOM_VERSION}"-*.whl)"

rm -rf "${DEST}"
mkdir -p "${DEST}"

# A wheel is a zip file; use Python's zipfile so that no unzip binary is needed.
COUNT="$(python3 - "${WHEEL}" "${DEST}" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "pydicom/data/test_files/"
n = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        # refuse anything that would escape the destination
        if rel.startswith("/") or ".." in rel.split("/"):
            raise SystemExit(f"unsafe path in wheel: {name}")
        out = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with zf.open(info) as src, open(out, "wb") as dst:
            dst.write(src.read())
        n += 1
print(n)
PY
)"

if [[ "${COUNT}" -eq 0 ]]; then
    echo "error: no files under pydicom/data/test_files/ in ${WHEEL}" >&2
    exit 1
fi

printf 'pydicom==%s\n%s files from %s\n' "${PYDICOM_VERSION}" "${COUNT}" "$(basename "${WHEEL}")" > "${MARKER}"
echo "extracted ${COUNT} files from $(basename "${WHEEL}") into ${DEST}"
