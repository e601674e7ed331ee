#!/usr/bin/env bash
# Installs what the lab, the tests and a deploy from this checkout need: Debian packages, a
# .venv with the pinned Python packages (pyproject.toml), and the Node packages of tests/node.
# Idempotent and quick when everything is there already. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  mmdebstrap systemd-container            # lab root filesystem and machines
  qemu-system-x86 qemu-utils ovmf         # lab VMs (TCG)
  nftables iptables iproute2              # lab network
  openssh-client util-linux               # ssh into machines; `script` gives nspawn a terminal
  busybox-static                          # a tiny Docker image for the lab's Docker test
  libvirt-clients libxml2-utils           # virt-xml-validate (and its xmllint) for domain XML
  fdisk                                   # sfdisk partitions the lab's disk images
  yamllint
  dosfstools mtools grub-efi-amd64-bin cloud-image-utils  # disk images, ESP, NoCloud seeds
  python3-venv
  docker-compose                          # `docker-compose config` checks the Ollama compose file
  vagrant vagrant-libvirt                 # `vagrant validate` checks the Vagrantfile
                                          # (and vagrant-libvirt can `vagrant up` it)
)
command -v node >/dev/null || APT_PACKAGES+=(nodejs npm)  # tests/node (Continue's schema)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is (re)installed only when pyproject.toml changed since the last install.
stamp=.venv/.installed-pyproject
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "bootstrap: installing the Python packages into .venv"
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' >.venv/pip.log 2>&1 \
    || { cat .venv/pip.log; exit 1; }
  echo "$want" >"$stamp"
fi

if [[ -f tests/node/package-lock.json ]] &&
  ! cmp -s tests/node/package-lock.json tests/node/node_modules/.aicoder-lock 2>/dev/null; then
  echo "bootstrap: installing tests/node's packages"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
  cp tests/node/package-lock.json tests/node/node_modules/.aicoder-lock
fi
