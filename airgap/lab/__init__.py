"""``airgap lab``: a rehearsal of the isolated site on one machine (not part of the product's path).

The lab builds a small isolated site out of Linux namespaces (root only):

* **The isolated network** is a named network namespace (default ``airgap-lab``,
  file ``/run/netns/airgap-lab``) holding *only* the loopback interface, up.
  127.0.0.0/8 is local on ``lo``, so every 127.0.10.N works; there is no other
  interface, no veth and no route, so any hidden download fails at once
  (``ip -n airgap-lab route get 192.0.2.1`` -> "Network is unreachable").
* **Nodes**: ``registry-1`` (127.0.10.1: registry host and staging host) and
  ``node-1`` .. ``node-{N-1}`` (127.0.10.2..N: container hosts).  Each node is
  ``unshare --mount --pid --uts --ipc --fork`` joined to the lab's network
  namespace.  Its PID 1 is a small Python init (:mod:`airgap.lab.ns`) that

  - mounts a copy-on-write view of the host's root filesystem: overlayfs with
    ``lowerdir=/`` and its upper/work layer in ``<workdir>/nodes/<node>/layer``
    (the node's "disk": hidden from every node, kept across a restart of the
    node -- :meth:`Lab.restart` is a reboot -- and removed with the lab); on its
    first boot the node is "installed": the host's external package sources are
    removed and the seed (ssh keys, hosts, resolv.conf, podman config) copied in;
  - mounts a fresh ``/proc`` (own PID namespace), a fresh read-only ``/sys``
    whose ``/sys/fs/cgroup`` holds the host's cgroup v1 hierarchies and not the
    unified cgroup2 mount (so pods get cgroups with the cgroupfs manager), a tmpfs
    ``/dev`` with the usual device nodes bound in and its own ``devpts``, tmpfs
    ``/run`` and ``/tmp``;
  - bind-mounts ``<workdir>/nodes/<node>/containers`` and ``.../containerd`` (on
    the host's disk) onto ``/var/lib/containers`` and ``/var/lib/containerd`` so
    podman and containerd can use overlayfs (overlay on overlay does not work);
  - hides the lab's work directory under a tmpfs, sets the hostname (own UTS
    namespace), ``pivot_root``\\ s into the new root;
  - runs ``sshd`` on 127.0.10.N:22 with the node's own ed25519 host key and root
    login by the lab client key only, restarts it if it dies, reaps orphans, and
    on SIGTERM stops everything in the node;
  - at boot starts what roles enabled for boot the way ``systemctl enable``
    does (links in ``/etc/systemd/system/{default,multi-user}.target.wants``):
    oneshot units such as podman's ``podman-restart.service`` run, others are
    supervised.

* **podman quirks of this host**, handled by the lab so roles need not know
  (file ``/etc/containers/containers.conf`` and ``storage.conf`` of each node):
  ``cgroups = "enabled"`` with ``cgroup_manager = "cgroupfs"`` on the host's
  cgroup v1 hierarchies (pods need real cgroups: with cgroups disabled ``podman
  kube play`` fails, "pod cgroup is not set"), ``default_ulimits = []``
  (raising RLIMIT_NOFILE fails here), ``events_logger = "file"`` and no
  journald (no systemd), ``netns = "host"`` (containers share the node's
  network namespace: no bridge/veth appears in the isolated network, and
  containers reach the registry at 127.0.10.1), runtime ``crun``, storage
  driver ``overlay`` on the host-disk bind mount.

On-disk layout (``workdir``, default :data:`DEFAULT_WORKDIR`)::

    lab.json                   state: netns, node pids, paths (status/down read it)
    ssh/id_ed25519[.pub]       lab client key (root login on every node)
    ssh/known_hosts            host keys of every node (127.0.10.N and node name)
    cp/                        ssh ControlPath sockets (per lab, see below)
    hosts.yml                  inventory (also written to ``inventory=`` if given)
    nodes/<node>/init.json     node init configuration
    nodes/<node>/init.log      node init + sshd log (stdout/stderr of PID 1)
    nodes/<node>/seed/         files copied into the node's upper layer at start
    nodes/<node>/containers/   the node's /var/lib/containers (podman storage)
    nodes/<node>/containerd/   the node's /var/lib/containerd (containerd content and snapshots)
    nodes/<node>/{layer,root}/ empty mount points, used only inside the node

Running Ansible against the lab -- from *inside* the lab's network namespace
(the host's namespace cannot reach the nodes, by design)::

    airgap lab up                                    # writes inventories/lab/hosts.yml
    ip netns exec airgap-lab ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml
    # or: nsenter --net=/run/netns/airgap-lab ansible-playbook ...
    # or, from Python: Lab(workdir).run_in_netns(["ansible-playbook", "-i", inv, "playbooks/site.yml"])

The inventory sets, for group ``airgap_lab`` (parent of ``registry``,
``staging`` and ``container_hosts``): ``ansible_user: root``,
``ansible_ssh_private_key_file: <workdir>/ssh/id_ed25519``,
``ansible_python_interpreter: /usr/bin/python3`` (the node sees the host's root
filesystem; modules need only the stdlib) and ``ansible_ssh_common_args``
``-o UserKnownHostsFile=<workdir>/ssh/known_hosts -o GlobalKnownHostsFile=/dev/null
-o StrictHostKeyChecking=yes -o ControlPath=<workdir>/cp/%h``.  The
ControlPath keeps ssh connection multiplexing per lab: two labs (in two
network namespaces) use the same addresses, and a shared master socket would
silently connect to the other lab.  Plain ssh works the same way::

    ip netns exec airgap-lab ssh -i <workdir>/ssh/id_ed25519 \\
        -o UserKnownHostsFile=<workdir>/ssh/known_hosts -o StrictHostKeyChecking=yes root@127.0.10.2

``nsenter -t <pid> -a <cmd>`` (pid from ``airgap lab status``/``lab.json``) or
:meth:`Lab.exec` runs a command directly in a node, without ssh.

Several labs may run at once if each has its own ``name`` (network namespace)
and ``workdir``; the addresses are the same in each, which is fine because
every lab has its own loopback.

Modules: :mod:`~airgap.lab.layout` (nodes, addresses, inventory text, the
files written into nodes), :mod:`~airgap.lab.nodes` (preparing and starting
one node), :mod:`~airgap.lab.handle` (a lab's state, status, running things in
it), :mod:`~airgap.lab.control` (:class:`Lab`: up, down, restart),
:mod:`~airgap.lab.ns` (namespace syscalls and the node init, stdlib only),
:mod:`~airgap.lab.demo` (the whole pipeline end to end, ``scripts/demo.sh``).
"""

from airgap.lab.control import Lab
from airgap.lab.handle import LabHandle
from airgap.lab.layout import (
    DEFAULT_INVENTORY,
    DEFAULT_NAME,
    DEFAULT_WORKDIR,
    SUBNET,
    LabInfo,
    LabNode,
    LabStatus,
    NodeStatus,
    node_names,
    render_inventory,
)

__all__ = [
    "DEFAULT_INVENTORY",
    "DEFAULT_NAME",
    "DEFAULT_WORKDIR",
    "SUBNET",
    "Lab",
    "LabHandle",
    "LabInfo",
    "LabNode",
    "LabStatus",
    "NodeStatus",
    "node_names",
    "render_inventory",
]
