//! The crate map of ARCHITECTURE.md ("Code map"), checked against what Cargo resolves
//! (`cargo metadata`): each crate of the workspace depends on exactly the crates of the workspace
//! the map draws under it; proto, sockbuf, engine and net are leaves of the map (none reaches
//! another crate's runtime); only broker joins engine and net; the SDK and the tools built on it
//! never reach glommio, engine, net or broker, not even through another crate. Dev-dependencies
//! (tests, benches) do not count: a broker test may use the SDK. `--frozen`: the check reads
//! Cargo.lock as the build left it and never writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Each workspace crate and the workspace crates its code may use: the map in ARCHITECTURE.md.
const MAP: &[(&str, &[&str])] = &[
    ("quiver-proto", &[]),
    ("quiver-sockbuf", &[]),
    ("quiver-engine", &["quiver-proto"]),
    ("quiver-net", &["quiver-proto", "quiver-sockbuf"]),
    (
        "quiver-broker",
        &["quiver-proto", "quiver-engine", "quiver-net"],
    ),
    ("quiver-client", &["quiver-proto", "quiver-sockbuf"]),
    ("quiver-tools", &["quiver-client"]),
    ("quiver-bench", &["quiver-client", "quiver-tools"]),
    ("quiver-testkit", &["quiver-client", "quiver-proto"]),
    ("quiver-fault", &["quiver-client", "quiver-tools"]),
];

/// What the SDK and everything built on it must never reach, directly or not.
const NOT_FROM_THE_SDK: &[&str] = &["glommio", "quiver-engine", "quiver-net", "quiver-broker"];

/// Every package's normal and build dependencies (not dev), by name, as Cargo resolved them.
struct Graph {
    members: BTreeSet<String>,
    deps: BTreeMap<String, BTreeSet<String>>,
}

fn resolve() -> Graph {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This machine's platform only: the packages the build downloaded. Without the filter Cargo
    // wants every platform's (Windows consoles, wasm), which `--frozen` may not fetch and a
    // Linux build never downloads (a clean machine's run failed on `anstyle-wincon`).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--frozen",
            "--filter-platform",
            &host,
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let name_of: BTreeMap<&str, &str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let members = m["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| name_of[id.as_str().unwrap()].to_string())
        .collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in m["resolve"]["nodes"].as_array().unwrap() {
        let name = name_of[node["id"].as_str().unwrap()].to_string();
        let entry = deps.entry(name).or_default();
        for d in node["deps"].as_array().unwrap() {
            let linked = d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if linked {
                entry.insert(name_of[d["pkg"].as_str().unwrap()].to_string());
            }
        }
    }
    Graph { members, deps }
}

impl Graph {
    /// Every package `from` reaches through normal and build dependencies.
    fn reach(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(p) = stack.pop() {
            for d in self.deps.get(&p).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    }
}

#[test]
fn every_dependency_edge_of_the_workspace_is_one_the_crate_map_draws() {
    let g = resolve();
    let mapped: BTreeSet<String> = MAP.iter().map(|(c, _)| c.to_string()).collect();
    assert_eq!(
        g.members, mapped,
        "a crate of the workspace is missing from the map (add it here and to ARCHITECTURE.md), \
         or the map names one that is gone"
    );
    let mut wrong = Vec::new();
    for (krate, allowed) in MAP {
        let actual: BTreeSet<&str> = g.deps[*krate]
            .iter()
            .filter(|d| g.members.contains(*d))
            .map(String::as_str)
            .collect();
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        if actual != allowed {
            wrong.push(format!(
                "{krate} depends on {actual:?}; the map allows {allowed:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn proto_engine_and_net_are_leaves_and_only_broker_joins_them() {
    let g = resolve();
    let ours = |c: &str| -> BTreeSet<String> {
        g.reach(c)
            .into_iter()
            .filter(|d| g.members.contains(d))
            .collect()
    };
    assert!(
        ours("quiver-proto").is_empty(),
        "proto reaches {:?}",
        ours("quiver-proto")
    );
    for leaf in ["quiver-engine", "quiver-net"] {
        let reached = ours(leaf);
        assert!(
            reached
                .iter()
                .all(|d| d == "quiver-proto" || d == "quiver-sockbuf"),
            "{leaf} reaches {reached:?}"
        );
    }
    // proto is pure: no runtime, no transport.
    let proto_all = g.reach("quiver-proto");
    for runtime in ["glommio", "tokio", "quinn", "quinn-proto"] {
        assert!(!proto_all.contains(runtime), "proto reaches {runtime}");
    }
    for c in &g.members {
        let r = ours(c);
        if r.contains("quiver-engine") && r.contains("quiver-net") {
            assert_eq!(c, "quiver-broker", "{c} joins engine and net");
        }
        assert!(!r.contains("quiver-broker"), "{c} depends on the broker");
    }
}

#[test]
fn the_sdk_and_the_tools_never_reach_glommio_engine_net_or_broker() {
    let g = resolve();
    for c in ["quiver-client", "quiver-tools", "quiver-bench"] {
        let reached = g.reach(c);
        let bad: Vec<&&str> = NOT_FROM_THE_SDK
            .iter()
            .filter(|n| reached.contains(**n))
            .collect();
        assert!(bad.is_empty(), "{c} reaches {bad:?}");
    }
}
