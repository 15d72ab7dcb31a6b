"""Material of the firewall traffic benchmark: a namespace pair on one veth, one rule set written
for each filter, and a fast 64-byte UDP sender.

    <pair>-a  eth0 10.0.10.1 ════ veth ════ eth0 10.0.10.2  <pair>-b
    (sender: the "VM")                      (receiver; in "ours" also the hypervisor side)

RULES is one list of 10,000 allow rules; the traffic matches only the last three (UDP to the
sink port, TCP to iperf3's port, ICMP echo), so a linear chain walks all of them. The same list
becomes our policy (vNIC of `a`, direction out: the peer is the destination), an iptables
INPUT chain, an nftables chain, or one nftables rule looking up a set.

Namespaces are created and deleted by name through netns_lab.kernel; nothing is ever added to
the root namespace (the veth is made from `b` with its peer born in `a`).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from netns_lab.kernel import netlink, netns
from tests.bench import traffic
from tests.bench.traffic import TrafficError, in_ns

SENDER_IP, RECEIVER_IP = "10.0.10.1", "10.0.10.2"
SENDER_MAC = "02:00:00:00:0a:01"
PREFIX = 24
SINK_PORT = 9  # UDP discard; a socket bound there in `b`, never read
IPERF_PORT = traffic.IPERF_PORT
CLIENT_CPU, SERVER_CPU = 0, 1  # iperf3 pinned: where its two ends run decides much of a 2-core result
DECOY_FIRST = IPv4Address("10.128.0.0")
UDP_PAYLOAD = 18  # 14 + 20 + 8 + 18 = 60 bytes, 64 on the wire with the FCS
SNMP_UDP = re.compile(r"^Udp: (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Allow:
    """Allow `proto` to `dst`/32 (port: TCP/UDP destination port, or the ICMP type)."""

    dst: str
    proto: str
    port: int


def rules(count: int) -> list[Allow]:
    """count - 3 rules that never match (TCP/80 to 10.128.x.y), then the three the traffic needs."""
    decoys = [Allow(str(DECOY_FIRST + i), "tcp", 80) for i in range(count - 3)]
    return [
        *decoys,
        Allow(RECEIVER_IP, "udp", SINK_PORT),
        Allow(RECEIVER_IP, "tcp", IPERF_PORT),
        Allow(RECEIVER_IP, "icmp", 8),
    ]


def policy(allowed: list[Allow]):  # type: ignore[no-untyped-def]  # -> fwpolicy.Policy
    """Our policy: endpoint 1 (the sender's vNIC), every rule direction out; default deny."""
    from dataplane import fwpolicy

    return fwpolicy.Policy(
        endpoints=(fwpolicy.Endpoint(1, ips=(SENDER_IP,)),),
        rules=tuple(
            fwpolicy.Rule(i, {1}, "out", fwpolicy.Cidr(f"{r.dst}/32"), r.proto, (r.port, r.port))
            for i, r in enumerate(allowed, start=1)
        ),
    )


def _iptables_match(r: Allow) -> str:
    if r.proto == "icmp":
        return f"-d {r.dst}/32 -p icmp -m icmp --icmp-type {r.port}"
    return f"-d {r.dst}/32 -p {r.proto} -m {r.proto} --dport {r.port}"


def iptables_restore(allowed: list[Allow]) -> str:
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f"-A INPUT {_iptables_match(r)} -j ACCEPT" for r in allowed]
    return "\n".join([*lines, "COMMIT", ""])


def _nft_match(r: Allow) -> str:
    if r.proto == "icmp":
        return f"ip daddr {r.dst} icmp type {r.port}"
    return f"ip daddr {r.dst} {r.proto} dport {r.port}"


NFT_TABLE = "zzfwb"
NFT_HOOK = "    type filter hook input priority filter; policy drop;\n"


def nft_linear(allowed: list[Allow]) -> str:
    body = "\n".join(f"    {_nft_match(r)} accept" for r in allowed)
    return f"table ip {NFT_TABLE} {{\n  chain input {{\n{NFT_HOOK}{body}\n  }}\n}}\n"


def nft_set(allowed: list[Allow]) -> str:
    """One rule and a set of (daddr, protocol, port) for TCP/UDP; ICMP has no port to key a
    concatenation by, so its rule stays a rule of its own (the one other rule)."""
    keyed = [r for r in allowed if r.proto != "icmp"]
    others = [r for r in allowed if r.proto == "icmp"]
    elements = ",\n      ".join(f"{r.dst} . {r.proto} . {r.port}" for r in keyed)
    rest = "\n".join(f"    {_nft_match(r)} accept" for r in others)
    return (
        f"table ip {NFT_TABLE} {{\n  set allowed {{\n    type ipv4_addr . inet_proto . inet_service\n"
        f"    elements = {{\n      {elements}\n    }}\n  }}\n"
        f"  chain input {{\n{NFT_HOOK}"
        f"    ip daddr . meta l4proto . th dport @allowed accept\n{rest}\n  }}\n}}\n"
    )


def load(ns: str, argv: list[str], text: str) -> None:
    proc = subprocess.run(
        in_ns(ns, *argv), input=text, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise TrafficError(f"{' '.join(argv)} in {ns} exited {proc.returncode}: {proc.stderr.strip()[:500]}")


def output(ns: str, *argv: str) -> str:
    return subprocess.run(in_ns(ns, *argv), capture_output=True, text=True, timeout=60, check=True).stdout


# ---- the namespace pair ------------------------------------------------------------------------
@dataclass
class Pair:
    name: str  # zzfwb<token>-<config>
    receiver_ifindex: int = 0  # eth0 in `b`: the sender's vSwitch port in "ours"
    sink: socket.socket | None = None

    @property
    def a(self) -> str:
        return f"{self.name}-a"

    @property
    def b(self) -> str:
        return f"{self.name}-b"


def make_pair(pair: Pair, made: list[str]) -> None:
    """Both namespaces (IPv6 off: no ND or MLD chatter), the veth, addresses, the UDP sink.
    Appends each namespace to `made` as soon as it exists, for the caller's cleanup."""
    for ns in (pair.a, pair.b):
        netns.create(ns)
        made.append(ns)
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            netlink.sysctl(ns, key, "1")
    with netlink.session(pair.b) as nl:
        pair.receiver_ifindex = nl.veth("eth0", "eth0", pair.a, mac=SENDER_MAC, up=True)
        nl.up("lo")
        nl.address("eth0", f"{RECEIVER_IP}/{PREFIX}")
    with netlink.session(pair.a) as nl:
        nl.up("eth0")
        nl.up("lo")
        nl.address("eth0", f"{SENDER_IP}/{PREFIX}")
    with netns.inside(pair.b):
        pair.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pair.sink.bind((RECEIVER_IP, SINK_PORT))


def delete_pairs(made: list[str]) -> None:
    """Kill what still runs in our namespaces (by pid, found by namespace inode), delete them."""
    inodes = {i for i in (netns.inode(ns) for ns in made) if i}
    netns.kill_processes(inodes)
    for ns in reversed(made):
        netns.delete(ns)


# ---- UDP packet rate ---------------------------------------------------------------------------
SENDER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

/* usage: udpflood DST PORT SECONDS PAYLOAD [PPS]; without PPS (or 0) as fast as it can, else
 * paced to PPS packets per second; prints "sent elapsed_s failed_calls" */
int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6)
        return 2;
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1)
        return 2;
    double seconds = atof(argv[3]), pps = argc == 6 ? atof(argv[5]) : 0;
    int batch = pps > 0 ? 16 : BATCH, calls = pps > 0 ? 1 : 16;  /* paced: small steps */
    static char payload[1472];
    struct iovec iov = {payload, (size_t)atoi(argv[4])};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        perror("udpflood");
        return 1;
    }
    struct timespec t0, t;
    unsigned long long sent = 0, failed = 0;
    double elapsed;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int k = 0; k < calls; k++) {
            int n = sendmmsg(fd, msgs, batch, 0);
            if (n < 0)
                failed++;
            else
                sent += n;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        elapsed = (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9;
        double ahead = pps > 0 ? sent / pps - elapsed : 0;  /* seconds ahead of the pace */
        if (ahead > 0) {
            struct timespec d = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
            nanosleep(&d, NULL);
        }
    } while (elapsed < seconds);
    printf("%llu %.6f %llu\n", sent, elapsed, failed);
    return 0;
}
"""


def build_sender(directory: Path) -> Path:
    source, binary = directory / "udpflood.c", directory / "udpflood"
    source.write_text(SENDER_C)
    proc = subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(source)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise TrafficError(f"gcc udpflood.c: {proc.stderr.strip()}")
    return binary


def udp_delivered(ns: str) -> int:
    """Datagrams that reached UDP in `ns`: queued to a socket, or refused for a full buffer."""
    with netns.inside(ns), open("/proc/thread-self/net/snmp") as f:
        header, values = SNMP_UDP.findall(f.read())[:2]
    udp = dict(zip(header.split(), map(int, values.split()), strict=True))
    return udp["InDatagrams"] + udp["InErrors"] + udp["NoPorts"]


@dataclass(frozen=True)
class UdpRate:
    sent: int
    delivered: int
    seconds: float

    @property
    def delivered_pps(self) -> float:
        return self.delivered / self.seconds

    @property
    def sent_pps(self) -> float:
        return self.sent / self.seconds


def udp_rate(pair: Pair, sender: Path, seconds: float) -> UdpRate:
    before = udp_delivered(pair.b)
    proc = subprocess.run(
        in_ns(pair.a, str(sender), RECEIVER_IP, str(SINK_PORT), str(seconds), str(UDP_PAYLOAD)),
        capture_output=True,
        text=True,
        timeout=seconds + 15,  # run() kills the sender by its pid on timeout
        check=False,
    )
    delivered = udp_delivered(pair.b) - before
    if proc.returncode != 0:
        raise TrafficError(f"udpflood in {pair.a} exited {proc.returncode}: {proc.stderr.strip()}")
    sent, elapsed, _failed = proc.stdout.split()
    return UdpRate(int(sent), delivered, float(elapsed))


def configs_in_rounds(configs: tuple[str, ...], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, config): every round visits all configs, each round in the other direction."""
    for round_ in range(rounds):
        for config in configs if round_ % 2 == 0 else configs[::-1]:
            yield round_, config


# ---- TCP throughput ----------------------------------------------------------------------------
def tcp_throughput(pair: Pair, seconds: int) -> float:
    """Bits per second received by a one-off iperf3 server in `b`, one stream from `a`; both ends
    pinned (iperf3 -A): the spread between two unpinned runs on this 2-core machine was larger
    than the differences measured here."""
    return traffic.tcp_throughput(
        pair.a,
        pair.b,
        RECEIVER_IP,
        seconds,
        server_args=("-A", str(SERVER_CPU)),
        client_args=("-A", str(CLIENT_CPU)),
    )
