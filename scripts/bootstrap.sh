#!/usr/bin/env bash
# Install and prepare everything netns-lab needs on a Debian 12 machine. Idempotent: each step
# prints one line and is skipped quickly when already done. Run as root (`sudo make setup`).
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    printf 'bootstrap: must run as root (network namespaces, eBPF, apt). Try: sudo make setup\n' >&2
    exit 2
fi

VENV=.venv
APT_PACKAGES=(
    python3-bpfcc bpfcc-tools linux-headers-amd64 iproute2 iputils-ping tcpdump tshark
    nftables iptables iperf3 graphviz python3-venv util-linux procps libbpf1 netcat-openbsd
    frr python3-matplotlib chromium
)

# 1. Debian packages: install only the missing ones.
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "apt packages: all ${#APT_PACKAGES[@]} installed"
else
    say "apt packages: installing ${missing[*]}"
    # tshark asks whether non-root users may capture; answer no without a prompt.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    # FRR runs only inside lab namespaces (netns_lab/features/overlay/frr.py), each node with its
    # own files under the lab's state dir. Its package would start the system frr service in the
    # root namespace (zebra and staticd on the machine's own routing table) and enable it at boot. So: a
    # temporary policy-rc.d forbids any service start during this install (unless the machine
    # already has one, e.g. a container's: it is left alone), and a freshly installed frr's
    # service is then disabled. An frr installed before bootstrap is not touched.
    new_frr=no; own_policy=no
    case " ${missing[*]} " in *" frr "*) new_frr=yes ;; esac
    if [ "$new_frr" = yes ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# netns-lab bootstrap: no service starts during its apt-get install\nexit 101\n' \
            > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=yes
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$own_policy" = yes ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    if [ "$new_frr" = yes ]; then
        if command -v deb-systemd-helper >/dev/null; then
            deb-systemd-helper disable frr.service || say "warning: could not disable frr.service"
        fi
        if command -v update-rc.d >/dev/null; then update-rc.d frr disable >/dev/null 2>&1 || true; fi
        say "frr: installed, system service disabled (FRR runs only in lab namespaces)"
    fi
fi

# 2. Kernel headers for bcc. The running kernel ships none: point build/source at Debian's
#    linux-headers (TC programs use only uapi headers, so the version gap does not matter).
kdir="/lib/modules/$(uname -r)"
if [ -e "$kdir/build" ]; then
    say "kernel headers: $kdir/build present"
else
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$hdr" ] || die "no /usr/src/linux-headers-*-amd64 (is linux-headers-amd64 installed?)"
    common="${hdr%-amd64}-common"
    mkdir -p "$kdir"
    if [ -L "$kdir/build" ]; then
        say "kernel headers: replacing dangling link $kdir/build -> $(readlink "$kdir/build")"
        rm -f "$kdir/build"
    fi
    ln -s "$hdr" "$kdir/build"
    if [ -d "$common" ] && [ ! -e "$kdir/source" ]; then
        ln -sfn "$common" "$kdir/source"
    fi
    say "kernel headers: linked $kdir/build -> $hdr, source -> $(readlink "$kdir/source" 2>/dev/null || echo none)"
fi

# 3. bpffs, for pinned maps.
if mountpoint -q /sys/fs/bpf; then
    say "bpffs: mounted at /sys/fs/bpf"
else
    mount -t bpf bpf /sys/fs/bpf
    say "bpffs: mounted /sys/fs/bpf"
fi

# 4. The venv: Debian's Python (which has bcc), with system site packages.
/usr/bin/python3 -c 'import bcc' 2>/dev/null \
    || die "Debian's /usr/bin/python3 cannot import bcc (is python3-bpfcc installed?)"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
    say "venv: $VENV ok (sees bcc)"
else
    if [ -e "$VENV" ]; then
        say "venv: $VENV cannot import bcc, recreating it from /usr/bin/python3"
        rm -rf "$VENV"
    else
        say "venv: creating $VENV from /usr/bin/python3 --system-site-packages"
    fi
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

# 5. The project and its dev tools, editable; redone only when pyproject.toml changes.
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -e "$stamp" ] && [ -x "$VENV/bin/nlab" ]; then
    say "python packages: up to date"
else
    say "python packages: pip install -e '.[dev]'"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

# 6. Prove bcc compiles and loads a TC program here.
"$VENV/bin/python" scripts/check_bcc.py
