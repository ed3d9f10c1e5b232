//! ENOSPC: a log on a small ext4 file system (a loop mount) is filled until an append fails. The
//! failure is `Error::DiskFull`, nothing acknowledged is lost, the log stays usable once space is
//! freed, and it reopens cleanly. Needs root (mount); elsewhere the test says so and skips.
mod common;
use common::*;
use quiver_engine::{Error, LogConfig, PartitionLog};
use quiver_proto::Offset;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted loop device: (mount point, loop device). Unmounted and detached on drop.
struct Mount(PathBuf, String);

impl Drop for Mount {
    fn drop(&mut self) {
        if !Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!("warning: could not unmount {}", self.0.display());
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.1).status();
    }
}

fn mount_small_fs(tmp: &Path) -> Option<Mount> {
    let img = tmp.join("fs.img");
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).ok()?;
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if !(ok(Command::new("truncate").arg("-s").arg("24M").arg(&img))
        && ok(Command::new("mkfs.ext4").arg("-q").arg(&img)))
    {
        return None;
    }
    let out = Command::new("losetup")
        .arg("--find")
        .arg("--show")
        .arg(&img)
        .output()
        .ok()?;
    let dev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    if !out.status.success() || dev.is_empty() {
        return None;
    }
    if !ok(Command::new("mount").arg(&dev).arg(&mnt)) {
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        return None;
    }
    Some(Mount(mnt, dev))
}

#[test]
fn enospc_is_disk_full_and_the_log_survives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = mount_small_fs(tmp.path()) else {
        eprintln!("SKIPPED: cannot loop-mount a small file system here (needs root)");
        return;
    };
    let root = mount.0.clone();
    let dir = root.join("p");
    run(&root, move || async move {
        let cfg = LogConfig {
            segment_bytes: 4 * 1024 * 1024,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&dir, cfg.clone()).await.unwrap();
        let mut acked = Vec::new();
        let err = loop {
            let b = batch(100, 2000, acked.len() as u64, 0);
            match log.append(std::slice::from_ref(&b), None).await {
                Ok(info) => acked.push((info.base_offset.0, b)),
                Err(e) => break e,
            }
            assert!(acked.len() < 1000, "a 24 MiB file system never filled up");
        };
        assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
        let end = log.end_offset();
        assert_eq!(
            log.durable_end(),
            end,
            "the failed append left nothing half-done"
        );
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), acked.len());
        for (got, (base, b)) in all.iter().zip(&acked) {
            assert_eq!((got.0, &got.2[..]), (*base, &b.bytes()[8..]));
        }
        // Free space by truncating, then appends work again.
        let half = Offset(acked[acked.len() / 2].0);
        assert_eq!(log.truncate(half).await.unwrap(), half);
        let info = log.append(&[batch(100, 2000, 7, 0)], None).await.unwrap();
        assert_eq!(info.base_offset, half);
        log.close().await.unwrap();
        drop(log);
        let log = PartitionLog::open(&dir, cfg).await.unwrap();
        assert_eq!(log.end_offset(), info.next_offset);
        assert_eq!(read_all(&log, 0).await.len(), acked.len() / 2 + 1);
        log.close().await.unwrap();
        drop(log);
        // Dropped files are closed asynchronously on the reactor's next cycle: give it one, so
        // that nothing holds the file system when it is unmounted.
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
    });
    drop(mount);
}
