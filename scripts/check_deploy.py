#!/usr/bin/env python3
"""Checks of deploy/ that need no cluster and no Docker daemon, run by scripts/check-deploy.sh
(which runs the schema validator and the Dockerfile linter first, and gives this script a Python
with PyYAML). Each check prints one line; any failure makes the exit status 1.

What it checks:
- deploy/streamd.toml and the TOML in the Kubernetes ConfigMap: every key is a streamd setting
  (the `settings!` table in broker/src/config.rs) and every value has the setting's type;
- every STREAMD_* variable named in deploy/ is one streamd reads;
- the Dockerfile's and the manifest's listen addresses are not loopback, and the ports they
  expose are the ones streamd listens on;
- the manifest adds no capability to a container that runs as a non-root user (it would not be
  in the process's effective set);
- .dockerignore keeps target/, .git and fuzzing data out of the build context, and excludes no
  file the build needs;
- deploy/seccomp-io_uring.json allows io_uring and names only system calls that exist;
- the systemd unit passes `systemd-analyze verify` and sets the limits streamd needs.
"""

import fnmatch
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: check-deploy.sh installs tomli
    import tomli as tomllib

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
failures = []
passed = 0


def ok(what):
    global passed
    passed += 1
    print(f"  ok    {what}")


def fail(what, why):
    failures.append(what)
    print(f"  FAIL  {what}: {why}")


def check(what, problems):
    """`problems` is a list of strings; empty means the check passed."""
    if problems:
        fail(what, "; ".join(problems))
    else:
        ok(what)


# ---------------------------------------------------------------- streamd's settings

SETTING = re.compile(r'^\s*(\w+):\s*([\w:<>]+)\s*=.*\benv\s+"(STREAMD_\w+)"')
TYPES = {
    "u16": "uint",
    "u32": "uint",
    "u64": "uint",
    "i64": "int",
    "bool": "bool",
    "String": "str",
    "PathBuf": "str",
    "SocketAddr": "str",
    "LogFormat": "str",
    "TimestampType": "str",
}


def load_settings():
    text = (ROOT / "broker/src/config.rs").read_text()
    settings = {}
    for line in text.splitlines():
        m = SETTING.match(line)
        if m:
            settings[m.group(1)] = (m.group(2), m.group(3))
    declared = len(re.findall(r'\benv\s+"STREAMD_', text))
    if not settings or len(settings) != declared:
        sys.exit(
            f"check_deploy.py: read {len(settings)} settings from broker/src/config.rs but it "
            f"declares {declared} STREAMD_ variables in the settings table: update SETTING"
        )
    unknown = {t for t, _ in settings.values()} - TYPES.keys()
    if unknown:
        sys.exit(f"check_deploy.py: setting types it does not know: {sorted(unknown)}")
    env = {e for _, e in settings.values()}
    env |= set(re.findall(r'#\[arg\([^)]*env\s*=\s*"(STREAMD_\w+)"', text))  # STREAMD_CONFIG
    return settings, env


def type_problems(settings, values, where):
    problems = []
    for key, value in values.items():
        if key not in settings:
            problems.append(f"{where}: {key} is not a streamd setting")
            continue
        want = TYPES[settings[key][0]]
        good = {
            "uint": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[want]
        if not good:
            problems.append(f"{where}: {key} = {value!r} is not a {settings[key][0]}")
    return problems


def not_loopback(addr):
    """Problems with a listen address `IP:PORT` that must be reachable from outside."""
    host, _, port = addr.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return [f"{addr} is not IP:PORT"]
    if not port.isdigit():
        return [f"{addr} has no port"]
    return [f"{addr} is loopback: nothing outside the container reaches it"] if ip.is_loopback else []


def port_of(addr):
    return int(addr.rpartition(":")[2])


# ---------------------------------------------------------------- the checks


def check_streamd_toml(settings):
    values = tomllib.loads((DEPLOY / "streamd.toml").read_text())
    problems = type_problems(settings, values, "deploy/streamd.toml")
    missing = sorted(settings.keys() - values.keys())
    if missing:
        problems.append(f"deploy/streamd.toml lacks {', '.join(missing)} (regenerate it)")
    check("deploy/streamd.toml: every key is a streamd setting, with its type", problems)


def check_env_names(env):
    problems = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for name in sorted(set(re.findall(r"\bSTREAMD_[A-Z0-9_]+\b", path.read_text()))):
            if name not in env:
                problems.append(f"{path.relative_to(ROOT)} names {name}, which streamd does not read")
    check("every STREAMD_* variable named in deploy/ is one streamd reads", problems)


def dockerfile_instructions():
    lines, cur = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        cur += raw
        if cur.strip():
            word, _, rest = cur.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        cur = ""
    return lines


def check_dockerfile():
    ins = dockerfile_instructions()
    env = {}
    for word, rest in ins:
        if word == "ENV":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                env[k] = v
    exposed = set()
    for word, rest in ins:
        if word == "EXPOSE":
            exposed |= set(rest.split())
    problems = []
    for var, proto in (("STREAMD_LISTEN", "udp"), ("STREAMD_METRICS_LISTEN", "tcp")):
        if var not in env:
            problems.append(f"no ENV {var} (streamd's default is 127.0.0.1)")
            continue
        bad = not_loopback(env[var])
        want = f"{port_of(env[var])}/{proto}"
        if not bad and want not in exposed:
            bad = [f"EXPOSE lacks {want} ({var}={env[var]})"]
        problems += bad
    data = env.get("STREAMD_DATA_DIR", "")
    volumes = [v.strip('[]",').rstrip("/") for w, r in ins if w == "VOLUME" for v in r.split()]
    if not data.startswith("/"):
        problems.append("no absolute ENV STREAMD_DATA_DIR")
    elif not any(data == v or data.startswith(v + "/") for v in volumes):
        problems.append(f"the data directory {data} is on no VOLUME")
    if not env.get("STREAMD_ADVERTISED_HOST"):
        problems.append("no ENV STREAMD_ADVERTISED_HOST (clients would be told 0.0.0.0)")
    check("Dockerfile: listens beyond loopback on the ports it exposes, data on a volume", problems)


def containers(doc):
    spec = (doc.get("spec") or {}).get("template", {}).get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        yield spec, pod_ctx, c


def check_kubernetes(settings):
    path = DEPLOY / "kubernetes/streamd.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    toml_problems, cap_problems, addr_problems, vol_problems = [], [], [], []
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.endswith(".toml"):
                    where = f"ConfigMap {name} {key}"
                    try:
                        toml_problems += type_problems(settings, tomllib.loads(text), where)
                    except tomllib.TOMLDecodeError as e:
                        toml_problems.append(f"{where}: {e}")
        for spec, pod_ctx, c in containers(doc):
            ctx = c.get("securityContext") or {}
            user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            added = (ctx.get("capabilities") or {}).get("add") or []
            if added and user not in (None, 0):
                cap_problems.append(
                    f"{kind} {name} container {c['name']} adds {added} but runs as user {user}: "
                    "a non-root container gets no effective capabilities"
                )
            env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
            ports = {(p.get("protocol", "TCP"), p["containerPort"]) for p in c.get("ports", [])}
            for var, proto in (("STREAMD_LISTEN", "UDP"), ("STREAMD_METRICS_LISTEN", "TCP")):
                if var in env:
                    p = not_loopback(env[var])
                    if not p and (proto, port_of(env[var])) not in ports:
                        p = [f"no {proto} containerPort {port_of(env[var])} for {var}"]
                    addr_problems += [f"container {c['name']}: {x}" for x in p]
                else:
                    addr_problems.append(f"container {c['name']}: {var} not set in env")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            for v in spec.get("volumes", []):
                s = v.get("secret")
                if s and v["name"] in mounts and not s.get("optional"):
                    vol_problems.append(
                        f"secret volume {v['name']} is required: the pod does not start without "
                        f"Secret {s.get('secretName')}"
                    )
    check("Kubernetes ConfigMap TOML: every key is a streamd setting, with its type", toml_problems)
    check("Kubernetes: no capability added to a non-root container", cap_problems)
    check("Kubernetes: streamd listens beyond loopback on its declared container ports", addr_problems)
    check("Kubernetes: the TLS secret is optional (development certificate without it)", vol_problems)


def check_dockerignore():
    path = ROOT / ".dockerignore"
    if not path.is_file():
        check(".dockerignore", ["missing: the build context would carry target/ and .git"])
        return
    patterns = [
        p.strip().lstrip("/").rstrip("/")
        for p in path.read_text().splitlines()
        if p.strip() and not p.lstrip().startswith("#")
    ]
    problems = []
    if any(p.startswith("!") for p in patterns):
        problems.append("this check does not follow ! (re-include) patterns: extend it first")

    def excluded_by(path):
        """Patterns that exclude `path` or a folder above it (Docker's rules, `**/` included)."""
        parts = path.split("/")
        hits = []
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            for p in patterns:
                tails = ["/".join(parts[j:i]) for j in range(i)]
                if fnmatch.fnmatchcase(sub, p) or (
                    p.startswith("**/") and any(fnmatch.fnmatchcase(t, p[3:]) for t in tails)
                ):
                    hits.append(p)
        return hits

    for path in ("target", "target/release", "proto/fuzz/target", ".git", "fuzz/artifacts",
                 "fuzz/corpus", "proto/fuzz/artifacts"):
        if not excluded_by(path):
            problems.append(f"{path} is not excluded")
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for path in ["Cargo.toml", "Cargo.lock", *members, *(f"{m}/src/lib.rs" for m in members)]:
        hit = excluded_by(path)
        if hit:
            problems.append(f"{path} (needed by the build) is excluded by {hit}")
    check(".dockerignore: keeps target/, .git and fuzz data out, keeps the workspace in", problems)


def known_syscalls():
    """Every system call name systemd knows (its @known set), or None without systemd-analyze."""
    if not shutil.which("systemd-analyze"):
        return None
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=False
    ).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        s = line.strip()
        if line.startswith("@"):
            cur = s
            groups[cur] = []
        elif s and not s.startswith("#") and cur:
            groups[cur].append(s)

    def expand(g, seen=()):
        names = set()
        for x in groups.get(g, []):
            if x.startswith("@"):
                if x not in seen:
                    names |= expand(x, seen + (g,))
            else:
                names.add(x)
        return names

    names = expand("@known")
    return names or None


def check_seccomp():
    path = DEPLOY / "seccomp-io_uring.json"
    problems = []
    if not path.is_file():
        check("seccomp-io_uring.json", ["missing: Docker's default profile refuses io_uring"])
        return
    prof = json.loads(path.read_text())
    actions = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
               "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG"}
    default = prof.get("defaultAction")
    if default not in actions:
        problems.append(f"defaultAction {default!r}")
    uring = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
    allowed, named = set(), set()
    for rule in prof.get("syscalls", []):
        if rule.get("action") not in actions:
            problems.append(f"action {rule.get('action')!r}")
        names = set(rule.get("names", [])) | ({rule["name"]} if "name" in rule else set())
        named |= names
        if rule.get("action") == "SCMP_ACT_ALLOW":
            allowed |= names
        elif names & uring:
            problems.append(f"{sorted(names & uring)} refused by a rule ({rule.get('action')})")
    if default != "SCMP_ACT_ALLOW" and not uring <= allowed:
        problems.append(f"{sorted(uring - allowed)} not allowed")
    known = known_syscalls()
    if known is None:
        print("  note  systemd-analyze not found: system call names in the seccomp profile not checked")
    else:
        unknown = sorted(named - known)
        if unknown:
            problems.append(f"not system calls (systemd knows none of them): {unknown}")
    check("seccomp-io_uring.json: io_uring allowed, real system call names, valid actions", problems)


def check_systemd():
    unit = DEPLOY / "systemd/streamd.service"
    text = unit.read_text()
    problems = []
    for need in ("LimitNOFILE=", "LimitMEMLOCK=", "io_uring_setup"):
        if need not in text:
            problems.append(f"no {need}")
    if not shutil.which("systemd-analyze"):
        print("  note  systemd-analyze not found: the unit is not verified")
    else:
        # verify wants ExecStart's binary to exist: point it at one that does.
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / unit.name
            copy.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.M))
            r = subprocess.run(
                ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
            )
            said = (r.stdout + r.stderr).strip().replace(str(copy), str(unit.relative_to(ROOT)))
            if r.returncode != 0 or said:
                problems.append(f"systemd-analyze verify: {said or 'exit ' + str(r.returncode)}")
    check("systemd unit: systemd-analyze verify is silent, limits and io_uring filter set", problems)


def main():
    settings, env = load_settings()
    print(f"deploy checks ({len(settings)} streamd settings read from broker/src/config.rs)")
    check_streamd_toml(settings)
    check_env_names(env)
    check_dockerfile()
    check_kubernetes(settings)
    check_dockerignore()
    check_seccomp()
    check_systemd()
    if failures:
        print(f"deploy checks: {len(failures)} failed, {passed} passed")
        return 1
    print(f"deploy checks: {passed} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
