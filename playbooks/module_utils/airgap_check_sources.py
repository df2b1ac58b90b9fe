# Copyright: airgap project
# License: EUPL-1.2
"""Checks of where a node would fetch software from: package sources and proxies."""

from __future__ import annotations

import os
import re
import shlex

from ansible.module_utils.airgap_check_common import Result, key_value

URL_RE = re.compile(r"\b(?:https?|ftp|socks5h?|socks4a?)://[^\s\"'<>,;\]]+", re.I)
PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "rsync_proxy")
PIP_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/root/.config/pip/pip.conf", "/root/.pip/pip.conf")
ENV_FILES = ("/etc/environment", "/etc/profile", "/etc/profile.d/*.sh", "/etc/bash.bashrc",
             "/root/.bashrc", "/root/.profile", "/etc/default/*")
SYSTEMD_DROPINS = ("/etc/systemd/system.conf", "/etc/systemd/system.conf.d/*.conf",
                   "/etc/systemd/system/*.service.d/*.conf", "/etc/systemd/system/*.service")


def _is_local_uri(value):
    """file:, cdrom:, copy: and plain paths name no host at all."""
    v = value.strip().strip("\"'")
    return v.startswith(("file:", "cdrom:", "copy:", "/")) or v in ("", ".")


def check_packages(files, enclave):
    res = Result("packages", "every package source is the enclave's")

    def judge(path, n, value):
        if _is_local_uri(value):
            res.note("%s:%d: %s (local)" % (files.show(path), n, value))
        else:
            enclave.judge(res, files.show(path), n, value, "packages")

    for path in files.glob("/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list"):
        for n, line in files.lines(path):
            parts = re.sub(r"\[[^\]]*\]", " ", line).split()
            if len(parts) >= 2 and parts[0] in ("deb", "deb-src"):
                judge(path, n, parts[1])
    for path in files.glob("/etc/apt/sources.list.d/*.sources"):
        for n, line in files.lines(path):
            key, value = key_value(line, ":")
            if key is not None and key.lower() in ("uris", "mirror"):
                for item in value.split():
                    judge(path, n, item)
    for path in files.glob("/etc/apt/apt.conf", "/etc/apt/apt.conf.d/*"):
        for n, line in files.lines(path, ("//", "#")):
            if "proxy" in line.lower():
                continue  # judged by the proxy check
            for url in URL_RE.findall(line):
                judge(path, n, url)
    for path in files.glob("/etc/yum.repos.d/*.repo", "/etc/dnf/dnf.conf", "/etc/yum.conf"):
        for n, line in files.lines(path, ("#", ";")):
            key, value = key_value(line)
            if key is not None and key.lower() in ("baseurl", "mirrorlist", "metalink"):
                for item in value.split():
                    judge(path, n, item)
    for path in files.glob(*PIP_FILES):
        for n, line in files.lines(path, ("#", ";")):
            key, value = key_value(line)
            if key is not None and key.lower() in ("index-url", "extra-index-url", "find-links", "trusted-host"):
                for item in value.split():
                    judge(path, n, item)
    if not res.evidence and not res.findings:
        res.note("no package source configured")
    return res


def check_proxy(files, enclave, environ=None):
    res = Result("proxy", "no proxy outside the enclave")

    def judge(source, n, value):
        enclave.judge(res, source, n, value, "proxy")

    for path in files.glob(*ENV_FILES):
        for n, line in files.lines(path):
            m = re.match(r"^(?:export\s+)?([A-Za-z_]+)\s*=\s*(.*)$", line)
            if m and m.group(1).lower() in PROXY_VARS:
                try:
                    value = " ".join(shlex.split(m.group(2)))
                except ValueError:
                    value = m.group(2)
                judge(files.show(path), n, value)
    for path in files.glob(*SYSTEMD_DROPINS):
        for n, line in files.lines(path):
            for m in re.finditer(r"(?i)\b(?:%s)=([^\s\"']+)" % "|".join(PROXY_VARS), line):
                judge(files.show(path), n, m.group(1))
    for path in files.glob("/etc/apt/apt.conf", "/etc/apt/apt.conf.d/*"):
        for n, line in files.lines(path, ("//", "#")):
            if "proxy" in line.lower():
                for url in URL_RE.findall(line):
                    judge(files.show(path), n, url)
    for path in files.glob(*PIP_FILES):
        for n, line in files.lines(path, ("#", ";")):
            key, value = key_value(line)
            if key is not None and key.lower() == "proxy" and value:
                judge(files.show(path), n, value)
    for path in files.glob("/etc/dnf/dnf.conf", "/etc/yum.conf", "/etc/yum.repos.d/*.repo"):
        for n, line in files.lines(path, ("#", ";")):
            key, value = key_value(line)
            if key is not None and key.lower() == "proxy" and value and value.lower() != "_none_":
                judge(files.show(path), n, value)
    for path in files.glob("/etc/containers/containers.conf", "/etc/containers/containers.conf.d/*.conf"):
        for n, line in files.lines(path):
            for m in re.finditer(r"(?i)\b(?:%s)=([^\s\"',\]]+)" % "|".join(PROXY_VARS), line):
                judge(files.show(path), n, m.group(1))
    env = os.environ if environ is None else environ
    for var in sorted(env):
        if var.lower() in PROXY_VARS and env[var]:
            judge("environment of the check (%s)" % var, None, env[var])
    if not res.evidence and not res.findings:
        res.note("no proxy configured")
    return res
