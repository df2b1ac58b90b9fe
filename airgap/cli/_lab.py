"""lab up/down/status: the rehearsal site."""

from __future__ import annotations

from airgap.cli._base import common_flags, emit, exit_codes, group


def cmd_lab(args) -> int:
    from airgap.lab import DEFAULT_INVENTORY, DEFAULT_NAME, DEFAULT_WORKDIR, Lab

    lab = Lab(args.dir or DEFAULT_WORKDIR, name=getattr(args, "name", None) or DEFAULT_NAME,
              inventory=getattr(args, "inventory", None) or DEFAULT_INVENTORY)
    if args.lab_command == "up":
        info = lab.up(nodes=args.nodes)
        emit(args, info.to_dict(), info.to_text())
    elif args.lab_command == "down":
        did = lab.down()
        emit(args, {"result": "down", "removed": did}, "lab is down" if did else "no lab was up")
    else:
        st = lab.status()
        emit(args, st.to_dict(), st.to_text())
        return 0 if st.up else 1
    return 0


def add_lab(top) -> None:
    sub = group(top, "lab", "lab_command", help="a rehearsal of the isolated site in Linux namespaces")
    p = _lab_action(sub, "up", "bring the lab up", exit_codes("up (or already up)", None, "a bad --nodes, --name or --dir"))
    p.add_argument("--nodes", type=int, default=3, help="number of nodes: one registry host, the rest container hosts")
    p.add_argument("--inventory", help="where to write the inventory (default inventories/lab/hosts.yml)")
    p.add_argument("--name", help="network namespace name (default airgap-lab; kept in the work directory)")
    common_flags(p)
    p = _lab_action(sub, "down", "remove everything the lab made", exit_codes("down (or nothing was up)", None, "a bad --dir"))
    common_flags(p)
    p = _lab_action(sub, "status", "show the nodes", exit_codes("up", "not up, or degraded", "a bad --dir"))
    common_flags(p)


def _lab_action(sub, name: str, help_: str, codes: str):
    p = sub.add_parser(name, help=help_, epilog=codes)
    p.add_argument("--dir", help="lab work directory (default /var/lib/airgap-lab)")
    p.set_defaults(func=cmd_lab)
    return p
