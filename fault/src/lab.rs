//! The lab: each broker in its own network namespace, the clients (this process) in another, all
//! joined by a bridge in a third, on 198.18.0.0/24 (the benchmarking range). Created at the start
//! of a run and deleted when the [`Lab`] is dropped (deleting a namespace deletes its veths).
//!
//! ```text
//!   <p>-c  (this process, after `enter_client_ns`)     198.18.0.1  clients
//!                                                      198.18.0.2  the relay (brokers advertise it)
//!   <p>-b1 (streamd 1)                                 198.18.0.11
//!   <p>-b2 ...                                         198.18.0.12
//!   <p>-sw (bridge br0, one veth port per namespace)
//! ```
//!
//! Where namespaces cannot be made (no root, no `ip`), the lab falls back to loopback: brokers on
//! 127.0.0.1, the relay on 127.0.0.2, and no fault that needs a namespace (partitions, loss by
//! nftables); the run says what it skipped.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Where the run's processes live.
pub struct Lab {
    /// Name prefix of the namespaces (`qf<pid>`).
    pub prefix: String,
    /// Namespaces were made (false: the loopback fallback).
    pub netns: bool,
    /// nftables works in the brokers' namespaces.
    pub nft: bool,
    /// How many brokers.
    pub brokers: u32,
    /// Why the lab fell back to loopback, or lacks nftables.
    pub limits: Vec<String>,
}

/// Runs `program args` and returns its output; an error names the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Deletes namespaces left by runs whose process is gone (a runner killed with SIGKILL
    /// cannot delete its own). Returns how many.
    pub fn sweep_stale() -> usize {
        let Ok(out) = run("ip", &["netns", "list"]) else {
            return 0;
        };
        let mut swept = 0;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(pid) = stale_owner(name) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists()
                && run("ip", &["netns", "del", name]).is_ok()
            {
                swept += 1;
            }
        }
        swept
    }

    /// Makes the namespaces and the bridge, or falls back to loopback.
    pub fn new(brokers: u32, want_netns: bool) -> Lab {
        let prefix = format!("qf{}", std::process::id());
        let mut lab = Lab {
            prefix,
            netns: false,
            nft: false,
            brokers,
            limits: Vec::new(),
        };
        let swept = Lab::sweep_stale();
        if swept > 0 {
            lab.limits
                .push(format!("deleted {swept} namespaces left by earlier runs"));
        }
        if !want_netns {
            lab.limits
                .push("network namespaces not asked for (--no-netns)".into());
            return lab;
        }
        lab.netns = true; // the addresses below are the namespaces' ones
        match lab.build() {
            Ok(()) => lab.nft = lab.check_nft(),
            Err(e) => {
                lab.teardown();
                lab.netns = false;
                lab.limits
                    .push(format!("no network namespaces ({e}); loopback only"));
            }
        }
        lab
    }

    /// The namespace of the clients.
    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    /// The namespace of broker `id` (from 1).
    pub fn broker_ns(&self, id: u32) -> String {
        format!("{}-b{id}", self.prefix)
    }

    /// The address broker `id` listens on.
    pub fn broker_ip(&self, id: u32) -> IpAddr {
        if self.netns {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + id as u8))
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }

    /// The address clients use: the relay's, which brokers advertise.
    pub fn relay_ip(&self) -> IpAddr {
        if self.netns {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))
        } else {
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
        }
    }

    /// The clients' own address (what broker-side filters match).
    pub fn client_ip(&self) -> IpAddr {
        if self.netns {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }

    /// A command that runs `program` in broker `id`'s namespace (or here, on loopback).
    pub fn broker_command(&self, id: u32, program: &str) -> Command {
        if self.netns {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.broker_ns(id), program]);
            c
        } else {
            Command::new(program)
        }
    }

    fn build(&self) -> Result<(), String> {
        let p = &self.prefix;
        let sw = format!("{p}-sw");
        run("ip", &["netns", "add", &sw])?;
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        let mut members = vec![(self.client_ns(), "c".to_string())];
        for id in 1..=self.brokers {
            members.push((self.broker_ns(id), format!("b{id}")));
        }
        for (ns, short) in &members {
            run("ip", &["netns", "add", ns])?;
            let (inner, outer) = (format!("{p}{short}i"), format!("{p}{short}o"));
            run(
                "ip",
                &[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ],
            )?;
            run("ip", &["link", "set", &inner, "netns", ns])?;
            run("ip", &["link", "set", &outer, "netns", &sw])?;
            run("ip", &["-n", &sw, "link", "set", &outer, "master", "br0"])?;
            run("ip", &["-n", &sw, "link", "set", &outer, "up"])?;
            run("ip", &["-n", ns, "link", "set", &inner, "name", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let client = self.client_ns();
        for ip in [self.client_ip(), self.relay_ip()] {
            run(
                "ip",
                &[
                    "-n",
                    &client,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
        }
        for id in 1..=self.brokers {
            let ip = self.broker_ip(id);
            run(
                "ip",
                &[
                    "-n",
                    &self.broker_ns(id),
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
        }
        Ok(())
    }

    /// Whether nftables works in the first broker's namespace (the table stays, empty).
    fn check_nft(&mut self) -> bool {
        let ns = self.broker_ns(1);
        let ok = run(
            "ip",
            &["netns", "exec", &ns, "nft", "add", "table", "inet", "qf"],
        )
        .and_then(|_| {
            run(
                "ip",
                &["netns", "exec", &ns, "nft", "delete", "table", "inet", "qf"],
            )
        });
        match ok {
            Ok(_) => true,
            Err(e) => {
                self.limits.push(format!(
                    "nftables unavailable ({e}): no partitions or loss by filter (install nftables)"
                ));
                false
            }
        }
    }

    /// Moves this thread (and every thread it starts afterwards) into the clients' namespace.
    /// Call before starting the async runtime.
    pub fn enter_client_ns(&self) -> Result<(), String> {
        if !self.netns {
            return Ok(());
        }
        let path = format!("/var/run/netns/{}", self.client_ns());
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: `f` is an open namespace file descriptor for the duration of the call;
        // setns only changes this thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Installs `rules` (nft rule bodies for the input chain, e.g. `ip saddr 198.18.0.1 drop`)
    /// in broker `id`'s namespace, replacing any earlier ones; no rules lifts them.
    pub fn set_broker_filter(&self, id: u32, rules: &[String]) -> Result<(), String> {
        if !self.nft {
            return Err("nftables unavailable".into());
        }
        let ns = self.broker_ns(id);
        let mut script = String::from("table inet qf\ndelete table inet qf\n");
        if !rules.is_empty() {
            script.push_str(
                "table inet qf {\n chain input {\n  type filter hook input priority 0; policy accept;\n",
            );
            for r in rules {
                script.push_str("  ");
                script.push_str(r);
                script.push('\n');
            }
            script.push_str(" }\n}\n");
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft in {ns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn teardown(&self) {
        let mut names = vec![format!("{}-sw", self.prefix), self.client_ns()];
        names.extend((1..=self.brokers).map(|id| self.broker_ns(id)));
        for ns in names {
            let _ = run("ip", &["netns", "del", &ns]);
        }
    }
}

/// The pid in a lab namespace's name (`qf<pid>-...`), if it is one.
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("qf")?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() {
        return None;
    }
    pid.parse().ok()
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.netns {
            self.teardown();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_lab_namespaces_name_an_owner() {
        assert_eq!(super::stale_owner("qf1234-b1"), Some(1234));
        assert_eq!(super::stale_owner("qf1234-sw"), Some(1234));
        for other in ["qf1234", "qf-b1", "qfx-b1", "netns0", "qf1234-"] {
            assert_eq!(super::stale_owner(other), None, "{other}");
        }
    }
}
