//! A small filesystem of its own for a broker's data (a loop-mounted ext4 image), so that the
//! disk-full fault fills that broker's disk and nothing else; unmounted when dropped.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::lab::run;

/// A mounted image.
pub struct LoopDisk {
    /// Where it is mounted.
    pub mount: PathBuf,
    image: PathBuf,
    filler: PathBuf,
}

impl LoopDisk {
    /// Makes an ext4 image of `bytes` at `image` and mounts it at `mount`.
    pub fn new(image: &Path, mount: &Path, bytes: u64) -> Result<LoopDisk, String> {
        std::fs::create_dir_all(mount).map_err(|e| format!("{}: {e}", mount.display()))?;
        let f = std::fs::File::create(image).map_err(|e| format!("{}: {e}", image.display()))?;
        f.set_len(bytes).map_err(|e| e.to_string())?;
        drop(f);
        let img = image.to_string_lossy();
        run("mkfs.ext4", &["-q", "-F", &img])?;
        run("mount", &["-o", "loop", &img, &mount.to_string_lossy()])?;
        Ok(LoopDisk {
            mount: mount.to_path_buf(),
            image: image.to_path_buf(),
            filler: mount.join("filler"),
        })
    }

    /// Takes every free block: a file allocated to the size of the free space, then single
    /// blocks until none is left.
    pub fn fill(&self) -> Result<u64, String> {
        let free = free_bytes(&self.mount)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.filler)
            .map_err(|e| e.to_string())?;
        let mut taken = 0u64;
        let mut len = free;
        while len >= 4096 {
            // SAFETY: fallocate on an open file descriptor owned by `f`, with an offset and a
            // length inside i64.
            let rc = unsafe {
                libc::fallocate(f.as_raw_fd(), 0, taken as libc::off_t, len as libc::off_t)
            };
            if rc == 0 {
                taken += len;
            } else {
                len /= 2;
            }
        }
        Ok(taken)
    }

    /// Gives the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

fn free_bytes(path: &Path) -> Result<u64, String> {
    let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path that lives across the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(format!(
            "statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.free();
        let _ = run("umount", &["-l", &self.mount.to_string_lossy()]);
        let _ = std::fs::remove_file(&self.image);
    }
}
