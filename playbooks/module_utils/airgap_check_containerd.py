# Copyright: airgap project
# License: EUPL-1.2
"""Checks of a containerd node: the signed images are there, and nothing can come from outside.

``containerd`` (on the node): every image of the signed manifest is in
containerd's ``k8s.io`` namespace by its digest, and a pull of an image the
internal registry does not have -- named by an upstream registry, so the
node's ``hosts.toml`` decides where it goes -- fails, having asked the internal
registry and nothing else (containerd's own log names every host it tried).

``containerd_probe`` (on the registry host, after every node's probe): the
registry's access log shows each probe, so the request really reached it.
"""

from __future__ import annotations

import re

from ansible.module_utils.airgap_check_common import Result

PROBE_IMAGE = "docker.io/library/airgap-probe"
_TRIED = re.compile(r'host="?([^"\s]+)"?')


def probe_ref(token):
    return "%s:%s" % (PROBE_IMAGE, token)


def probe_path(token):
    """The request the internal registry must log for the probe (the docker.io namespace, mapped)."""
    return "/v2/docker.io/library/airgap-probe/manifests/%s" % token


def _images(run, ctr, address):
    rc, out, err = run([ctr, "--address", address, "-n", "k8s.io", "images", "ls"])
    if rc != 0:
        return None, (err or out).strip()[:300]
    refs, digests = set(), set()
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            refs.add(parts[0])
            digests.add(parts[2])
    return (refs, digests), None


def probe_argv(ctr, address, hosts_dir, token):
    """The probe pull's command line. No ``--user``: the node's hosts.toml files (root-only) hold the pull
    credential, so no secret is ever on a command line (``ps`` shows every process's argv to every user)."""
    return [ctr, "--address", address, "-n", "k8s.io", "images", "pull", "--hosts-dir", hosts_dir, probe_ref(token)]


def check_containerd(run, ctr, images, internal, hosts_dir, address, token):
    """*images*: the signed manifest's (internal name, digest) pairs."""
    res = Result("containerd")
    if not ctr:
        res.fail("ctr", "(missing)", "containerd is not installed")
        return res
    found, err = _images(run, ctr, address)
    if found is None:
        res.fail("ctr -n k8s.io images ls", err, "containerd does not answer on %s" % address)
        return res
    refs, digests = found
    for name, digest in images:
        ref = "%s@%s" % (name, digest)
        if ref in refs or digest in digests:
            res.note("%s present in k8s.io" % ref)
        else:
            res.fail("ctr -n k8s.io images ls", ref, "a signed image is not pre-pulled into containerd's k8s.io namespace")
    rc, out, err = run(probe_argv(ctr, address, hosts_dir, token))
    text = (err or "") + (out or "")
    tried = sorted(set(_TRIED.findall(text)))
    source = "ctr images pull %s" % probe_ref(token)
    if rc == 0:
        res.fail(source, probe_ref(token), "a pull of an image the internal registry does not have succeeded")
    outside = [h for h in tried if not internal(h)]
    if outside:
        res.fail(source, ", ".join(outside), "containerd tried a registry outside the enclave for an image the "
                                               "internal registry lacks (a hosts.toml falls back upstream)")
    if rc != 0 and not outside:
        res.note("%s failed, having asked only %s" % (source, ", ".join(tried) or "the internal registry"))
    res.summary_ok = "%d signed image(s) in k8s.io; an absent image fails at the internal registry" % len(images)
    return res


def read_logs(run, files, paths, unit):
    """The registry's access log: its files, else its systemd journal."""
    texts = [files.read(p) or "" for p in files.glob(*paths)]
    if any(texts):
        return "\n".join(texts), ", ".join(files.show(p) for p in files.glob(*paths))
    rc, out, _err = run(["journalctl", "--unit", unit, "--output", "cat", "--no-pager", "--lines", "20000"])
    return (out if rc == 0 else ""), "journalctl --unit %s" % unit


def check_probe_logs(text, shown, probes):
    """One ``containerd_probe`` result per node: its probe's request is in the registry's log."""
    out = {}
    for node, token in sorted((probes or {}).items()):
        res = Result("containerd_probe", "the internal registry logged the node's probe")
        path = probe_path(token)
        lines = [line for line in text.splitlines() if path in line]
        if lines:
            res.note("%s: %s logged (%d line(s)): %s" % (shown, path, len(lines), lines[0].strip()[:200]))
        else:
            res.fail(shown, path, "the registry's access log does not show the node's probe: the request did not reach it")
        out[node] = res.to_dict()
    return out


def pod_of(name, pods):
    """The workload whose pod *name* is (``Deployment/X`` runs pods ``X-pod-N``, ``Pod/X`` one pod ``X``)."""
    for workload, patterns in pods.items():
        if any(re.match(p + r"\Z", name or "") for p in patterns):
            return workload
    return None


def pod_patterns(objects):
    """Pod name patterns of a workload's objects, as podman kube play names pods."""
    out = []
    for obj in objects:
        kind, _, name = obj.partition("/")
        if kind == "Pod":
            out.append(re.escape(name))
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append(re.escape(name) + r"-pod(-[0-9]+)?")
    return out


__all__ = ["check_containerd", "probe_argv", "check_probe_logs", "read_logs", "probe_ref", "probe_path", "pod_of", "pod_patterns"]
