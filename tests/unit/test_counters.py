"""Reading a container's counters from /proc and cgroup files (laid out here as on a host)."""

from servicehub.counters import cpu_file, net_bytes, read_counters, read_small

CID = "eb4a4bcd0cc8922d6e6b6a05f0247fef7874a4101a9fcf2e84a295ecb6210dc3"
# /proc/<pid>/net/dev as the kernel writes it (columns shortened to the ones read: the first and
# ninth number are received and sent bytes).
NET_DEV = "\n".join(
    [
        "Inter-|   Receive                            |  Transmit",
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets",
        "    lo:     500    5 0 0 0 0 0 0      500    5 0 0 0 0 0 0",
        "  eth0:    1000   10 0 0 0 0 0 0      234    3 0 0 0 0 0 0",
        "  eth1:      10    1 0 0 0 0 0 0        6    1 0 0 0 0 0 0",
    ]
)


def host(tmp_path, cgroup_lines, files):
    proc = tmp_path / "proc" / "42"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "dev").write_text(NET_DEV)
    (proc / "cgroup").write_text("\n".join(cgroup_lines) + "\n")
    root = tmp_path / "cgroup"
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return tmp_path / "proc", root


def test_network_bytes_leave_out_loopback():
    assert net_bytes(NET_DEV) == 1000 + 234 + 10 + 6


def test_cgroup_v1(tmp_path):
    proc, root = host(
        tmp_path,
        ["3:cpuset:/docker/" + CID, "2:cpuacct:/docker/" + CID, "1:cpu:/docker/" + CID, "0::/"],
        {f"cpuacct/docker/{CID}/cpuacct.usage": "34167130\n"},
    )
    found = read_counters(42, CID, proc=proc, cgroup_root=root, clock=lambda: 7.0)
    assert (found.read, found.net_bytes, found.cpu_ns, found.pid) == (7.0, 1250, 34167130, 42)


def test_cgroup_v1_with_cpu_and_cpuacct_together(tmp_path):
    path = f"system.slice/docker-{CID}.scope"
    proc, root = host(
        tmp_path, ["4:cpu,cpuacct:/" + path], {f"cpu,cpuacct/{path}/cpuacct.usage": "99"}
    )
    assert read_counters(42, CID, proc=proc, cgroup_root=root).cpu_ns == 99


def test_cgroup_v2(tmp_path):
    path = f"system.slice/docker-{CID}.scope"
    proc, root = host(
        tmp_path,
        ["0::/" + path],
        {"cgroup.controllers": "cpu memory", f"{path}/cpu.stat": "usage_usec 1500\nuser_usec 1\n"},
    )
    assert read_counters(42, CID, proc=proc, cgroup_root=root).cpu_ns == 1_500_000


def test_a_pid_of_another_process_or_unreadable_files_give_nothing(tmp_path):
    proc, root = host(tmp_path, ["2:cpuacct:/user.slice"], {})
    assert read_counters(42, CID, proc=proc, cgroup_root=root) is None  # not the container's
    assert read_counters(43, CID, proc=proc, cgroup_root=root) is None  # no such process
    assert read_counters(0, CID, proc=proc, cgroup_root=root) is None
    assert cpu_file("garbage\n\n", root) is None


def test_a_file_longer_than_one_read_is_read_whole(tmp_path):
    big = tmp_path / "net_dev"
    text = "".join(f"veth{i}: {i} 0 0 0 0 0 0 0 {i} 0\n" for i in range(5000))  # > 64 KiB
    big.write_text(text)
    assert len(text) > 65536 and read_small(big) == text
