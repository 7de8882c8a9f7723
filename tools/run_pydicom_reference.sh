#!/usr/bin/env bash
# Regenerate tests/fixtures/dicom/pydicom_expected.json and the fixture subset:
#   1. fetch the corpus (tools/fetch_pydicom_corpus.sh, a no-op when present),
#   2. create/refresh a venv outside the repo with the pinned packages,
#   3. run tools/pydicom_reference.py.
# Needs python3 with venv+pip (Debian: apt-get install python3-venv python3-pip).
# The venv location can be changed with FOVEA_PYREF_VENV.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOVEA_PYREF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fovea/pydicom-ref-venv}"
REQ="${REPO_ROOT}/tools/pydicom_reference_requirements.txt"

"${REPO_ROOT}/tools/fetch_pydicom_corpus.sh"

if [[ ! -x "${VENV}/bin/python" ]]; then
    python3 -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check -r "${REQ}"

"${VENV}/bin/python" "${REPO_ROOT}/tools/pydicom_reference.py" "$@"
