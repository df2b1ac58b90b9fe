# Copyright: airgap project
# License: EUPL-1.2
"""Checks of what runs on a container host: the workloads, and the node's bundle marker.

A workload is judged against its specification from the controller: the
digests the signed manifest lists for its image, its network mode, the host
paths it may mount, its health URL.  Anything else that exists on the node
(another container, running or stopped; a rootless container of any user) is
a finding.
"""

from __future__ import annotations

import json
import os
import pwd

from ansible.module_utils.airgap_check_common import Result
from ansible.module_utils.airgap_check_containerd import pod_of

try:
    from urllib.request import urlopen
    from urllib.error import HTTPError, URLError
except ImportError:  # pragma: no cover
    urlopen = None


def _podman_json(run, argv):
    rc, out, err = run(argv)
    if rc != 0:
        return None, (err or out).strip()[:300]
    try:
        return json.loads(out or "[]") or [], None
    except ValueError:
        return None, "no JSON from %s" % " ".join(argv[:3])


def podman_state(run, podman):
    """(containers by id with their inspect data, images by id, error)."""
    listing, err = _podman_json(run, [podman, "ps", "--all", "--format", "json"])
    if listing is None:
        return None, None, err
    ids = [c.get("Id") for c in listing if c.get("Id")]
    inspected = {}
    if ids:
        data, err = _podman_json(run, [podman, "container", "inspect"] + ids)
        if data is None:
            return None, None, err
        inspected = {c.get("Id"): c for c in data}
    image_ids = sorted({c.get("Image") for c in inspected.values() if c.get("Image")})
    images = {}
    if image_ids:
        data, _err = _podman_json(run, [podman, "image", "inspect"] + image_ids)
        images = {i.get("Id"): i for i in (data or [])}
    pod_names = {}
    if any(c.get("Pod") for c in listing):
        pods, _err = _podman_json(run, [podman, "pod", "ps", "--format", "json"])
        pod_names = dict((p.get("Id"), p.get("Name")) for p in pods or [])
    containers = []
    for c in listing:
        info = inspected.get(c.get("Id"), {})
        if c.get("Pod") and not c.get("PodName"):  # `podman ps` names pods only with --pod
            c = dict(c, PodName=pod_names.get(c["Pod"], ""))
        containers.append((c, info))
    return containers, images, None


def _digests(info, image):
    found = set()
    if info.get("ImageDigest"):
        found.add(info["ImageDigest"])
    if image.get("Digest"):
        found.add(image["Digest"])
    for rd in image.get("RepoDigests") or []:
        if "@" in rd:
            found.add(rd.split("@", 1)[1])
    return found


def _mounts(info):
    out = []
    for m in info.get("Mounts") or []:
        if m.get("Type") == "bind":
            out.append("%s:%s" % (m.get("Source"), m.get("Destination")))
    return out


def check_workloads(run, podman, files, workloads, signed_digests, health_timeout=5):
    """Judge every container on the node against *workloads* (specs from the controller).

    A workload runs as pods (``podman kube play``): its spec names the pods'
    name patterns (``pods``), the digests its containers may run and those of
    the pods' infra container (``infra_digests``).  A spec without ``pods`` is
    one container of that name.
    """
    res = Result("workloads", "")
    specs = dict((w["name"], w) for w in workloads)
    pods = dict((w["name"], w["pods"]) for w in workloads if w.get("pods"))
    if not podman:
        res.fail("podman", "(missing)", "podman is not installed: the workloads cannot run")
        return res
    containers, images, err = podman_state(run, podman)
    if containers is None:
        res.fail("podman ps --all", err or "", "the container engine could not be asked")
        return res
    seen, healthy = set(), set()
    for c, info in containers:
        names = c.get("Names") or []
        name = names[0] if names else (c.get("Id") or "")[:12]
        source = "podman container inspect %s" % name
        image = images.get(info.get("Image"), {}) if images else {}
        digests = _digests(info, image)
        image_name = info.get("ImageName") or c.get("Image", "")
        state = str((info.get("State") or {}).get("Status") or c.get("State", "")).lower()
        workload = pod_of(c.get("PodName") or "", pods) if c.get("Pod") or info.get("Pod") else None
        spec = specs.get(workload) if workload else (specs.get(name) if not pods.get(name) else None)
        infra = bool(info.get("IsInfra") or c.get("IsInfra"))
        if spec is not None and workload and infra:
            spec = dict(spec, name=name, digests=spec.get("infra_digests") or [], mounts=[])
        elif spec is not None and workload:
            spec = dict(spec, name=name)
        if spec is None:
            known = sorted(digests & set(signed_digests))
            why = "not a workload of this node (%s)" % (
                "its image is in the signed manifest" if known else "image digest %s is not in the signed manifest" % (
                    ", ".join(sorted(digests)) or "unknown"))
            res.fail(source, "%s %s (%s)" % (name, image_name, state), why)
            continue
        owner = workload or name
        if not infra:
            seen.add(owner)
        problems = _judge(spec, info, digests, image_name, state)
        for value, why in problems:
            res.fail(source, value, why)
        if problems:
            continue
        if owner in healthy or infra:
            res.note("%s: %s@%s, %s" % (name, image_name.split("@")[0],
                                         (sorted(digests & set(spec.get("digests") or [])) or ["?"])[0], state))
            continue
        healthy.add(owner)
        answer = _health(spec.get("health_url"), health_timeout)
        if answer is not None and not answer[0]:
            res.fail(spec["health_url"], name, answer[1])
            continue
        res.note("%s: %s@%s, %s%s" % (name, image_name.split("@")[0], sorted(digests & set(spec.get("digests") or []))[0],
                                       state, ("; %s %s" % (spec["health_url"], answer[1])) if answer else ""))
    for name in sorted(set(specs) - seen):
        res.fail("podman ps --all", name, "the workload %s does not exist on this node" % name)
    _rootless(files, res)
    res.summary_ok = "%d workload(s) run their signed digests as specified and answer" % len(specs)
    return res


def _judge(spec, info, digests, image_name, state):
    out = []
    name = spec["name"]
    if state != "running":
        exit_code = (info.get("State") or {}).get("ExitCode")
        out.append(("%s %s" % (name, state), "stopped: the workload is not running%s" % (
            " (exit code %s)" % exit_code if exit_code not in (None, 0) else "")))
        return out
    allowed = set(spec.get("digests") or [])
    if not digests & allowed:
        out.append(("%s %s" % (name, ", ".join(sorted(digests)) or "no digest"),
                    "runs a digest the signed manifest does not list for %s (signed: %s)" % (name, ", ".join(sorted(allowed)) or "none")))
    if spec.get("image") and not image_name.startswith(spec["image"]):
        out.append(("%s %s" % (name, image_name), "runs an image not from the internal registry (%s)" % spec["image"]))
    host_config = info.get("HostConfig") or {}
    if host_config.get("Privileged"):
        out.append(("%s privileged" % name, "privileged, which the workload spec does not allow"))
    network = host_config.get("NetworkMode") or ""
    if network == "host" and spec.get("network") != "host":
        out.append(("%s network host" % name, "shares the host's network, which the workload spec does not allow"))
    allowed_mounts = set(spec.get("mounts") or [])
    for mount in _mounts(info):
        if mount not in allowed_mounts:
            out.append(("%s mount %s" % (name, mount), "mounts a host path the workload spec does not list"))
    if (host_config.get("CapAdd") or []) and not spec.get("cap_add"):
        out.append(("%s cap-add %s" % (name, ",".join(host_config["CapAdd"])), "adds capabilities the workload spec does not list"))
    return out


def _health(url, timeout):
    """None when no URL; (ok, text) otherwise."""
    if not url or urlopen is None:
        return None
    try:
        with urlopen(url, timeout=timeout) as resp:  # nosec - an internal URL from the inventory
            return True, "HTTP %d" % resp.status
    except HTTPError as exc:
        return False, "the health URL answered HTTP %d" % exc.code
    except (URLError, OSError) as exc:
        return False, "the health URL does not answer (%s)" % getattr(exc, "reason", exc)


def _rootless(files, res):
    """Containers of users other than root: conmon processes and per-user container stores."""
    for comm in files.glob("/proc/[0-9]*/comm"):
        if (files.read(comm) or "").strip() != "conmon":
            continue
        try:
            uid = os.stat(os.path.dirname(comm)).st_uid
        except OSError:
            continue
        if uid != 0:
            res.fail(os.path.dirname(comm), "conmon of %s" % _user(uid), "a rootless container runs (user %s)" % _user(uid))
    for store in files.glob("/home/*/.local/share/containers/storage/*-containers/containers.json",
                            "/var/lib/*/.local/share/containers/storage/*-containers/containers.json"):
        try:
            entries = json.loads(files.read(store) or "[]") or []
        except ValueError:
            entries = []
        for entry in entries:
            names = entry.get("names") or [entry.get("id", "")[:12]]
            res.fail(files.show(store), names[0], "a rootless container exists (%s)" % files.show(store).split("/.local")[0])


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_marker(files, path, want):
    """The node's marker names the signed manifest digest (and its name and version)."""
    res = Result("marker", "names the signed manifest")
    text = files.read(files.path(path))
    if text is None:
        res.fail(path, "(missing)", "no marker: the workloads stage has not run here")
        return res
    try:
        marker = json.loads(text)
    except ValueError:
        res.fail(path, text[:80], "not JSON")
        return res
    digest = marker.get("manifest_digest")
    if digest != want.get("manifest_digest"):
        res.fail(path, "manifest_digest %s" % digest, "the signed manifest is %s" % want.get("manifest_digest"),
                 line=_line(text, "manifest_digest"))
    for key in ("name", "version"):
        if want.get(key) and marker.get(key) != want.get(key):
            res.fail(path, "%s %s" % (key, marker.get(key)), "the signed bundle's %s is %s" % (key, want.get(key)),
                     line=_line(text, '"%s"' % key))
    if not res.findings:
        res.note("%s: %s %s (%s)" % (path, marker.get("name"), marker.get("version"), digest))
    return res


def _line(text, needle):
    idx = text.find(needle)
    return None if idx < 0 else text.count("\n", 0, idx) + 1
