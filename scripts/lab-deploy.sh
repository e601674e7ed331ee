#!/usr/bin/env bash
# Boots the local lab (Debian 12 machines on this host) and deploys this checkout to it with the
# real pyinfra CLI. Arguments go to `python -m lab up` (e.g. --machines guest,hv).
# Instance and state: AICODER_LAB_NAME (default lab), AICODER_LAB_DIR (default .lab).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
py=.venv/bin/python

$py -m lab up "$@"
inventory=$($py -m lab inventory)
started=$SECONDS
.venv/bin/pyinfra -y "$inventory" deploy.py
echo "deployed in $((SECONDS - started)) s"

# The next steps, runnable from any directory: they start with a cd to this checkout (the lab
# package and deploy.py are found there) and the lab's own settings when they were given.
echo
echo "The lab is up. Next:"
echo "  cd $(printf %q "$PWD")"
for var in AICODER_LAB_NAME AICODER_LAB_DIR; do
  if [[ -n ${!var:-} ]]; then echo "  export $var=$(printf %q "${!var}")"; fi
done
cat <<EOT
  $py -m lab status        # machines and addresses
  $py -m lab ssh guest     # a root shell in the AI guest
  .venv/bin/pyinfra $inventory deploy.py --dry   # the plan (no -y): a converged lab changes nothing
  AICODER_INVENTORY=$inventory .venv/bin/pytest tests/infra   # the checks, against the lab
  $py -m lab down          # stop everything, restore this host's network
EOT
