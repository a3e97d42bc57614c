//! Members' data disks on the machine that runs the containers: a provider trait and two kinds.
//!
//! - [`FixedVolumes`]: a host folder per member; it cannot grow (its size is whatever the
//!   host's file system has), so a platform using it reports disk changes as unsupported.
//! - [`LoopXfsVolumes`]: a loop-mounted XFS image per member, grown online (ENVIRONMENT.md):
//!   `truncate -s` the image, `losetup -c` the loop device, `xfs_growfs` the mount point. ext4
//!   cannot grow online here, and XFS images must be at least about 300 MB.
//!
//! What this is not: a volume manager for remote engines. The paths are on the local machine, so
//! the Docker engines using them must run here too (true for every engine of the test bed). The
//! commands run through `tokio::process`; they need root (mount, losetup).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::process::Command;

/// The smallest image `mkfs.xfs` accepts (about 300 MB), rounded up.
pub const XFS_MIN_BYTES: u64 = 300 << 20;

/// A member's volume on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// The host folder to bind-mount into the member.
    pub host_path: PathBuf,
    /// The volume's size in bytes, 0 when it has no size of its own.
    pub size_bytes: u64,
}

/// How full a volume is, measured against the size it was given (the size the platform reports
/// and grows), so that `used_bytes == size_bytes` exactly when a write fails for lack of space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeUsage {
    /// Everything a write can no longer have: data, and the filesystem's own share (XFS' log and
    /// metadata, about 10 % of a 512 MiB image) and reserved blocks. `df`'s "used" leaves that
    /// share out, and a fill ratio of "used" over the image's size would never reach 100 %: a
    /// policy's critical mark at 95 % would fire only after the disk was full.
    pub used_bytes: u64,
    /// The volume's size (for loop-xfs, the image file's).
    pub size_bytes: u64,
}

/// A failed volume operation.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("`{command}` could not be started")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("file operation on {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("this volume kind cannot grow")]
    CannotGrow,
    #[error("a volume never shrinks ({current} bytes now, {wanted} asked)")]
    Shrink { current: u64, wanted: u64 },
    #[error("{wanted} bytes is below the XFS minimum of {XFS_MIN_BYTES} bytes")]
    TooSmall { wanted: u64 },
    #[error("member {0} has no volume")]
    Missing(String),
    #[error("unexpected output of `{command}`: {output}")]
    Parse { command: String, output: String },
}

/// Where members' data lives. Implementations are idempotent: `ensure` finds an existing volume
/// again (keeping its data), `delete` of a missing volume succeeds.
#[async_trait]
pub trait VolumeProvider: Send + Sync + std::fmt::Debug {
    /// `fixed` or `loop-xfs`.
    fn kind(&self) -> &'static str;

    /// Whether volumes grow (online) at all.
    fn can_grow(&self) -> bool;

    /// Creates the member's volume of `bytes` if missing and makes it ready to mount.
    async fn ensure(&self, member: &str, bytes: u64) -> Result<Volume, VolumeError>;

    /// Grows the member's volume to `bytes`, online.
    async fn grow(&self, member: &str, bytes: u64) -> Result<(), VolumeError>;

    /// Used and total bytes, `None` when the volume has no size of its own.
    async fn usage(&self, member: &str) -> Result<Option<VolumeUsage>, VolumeError>;

    /// The volume's size (0 when it has none), `None` when the member has no volume.
    async fn size(&self, member: &str) -> Option<u64>;

    /// Detaches the volume (unmount) but keeps its data for a later `ensure`.
    async fn release(&self, member: &str) -> Result<(), VolumeError>;

    /// Deletes the volume and its data.
    async fn delete(&self, member: &str) -> Result<(), VolumeError>;
}

/// Runs a command, returning its stdout; a non-zero exit is an error carrying stderr.
async fn run(program: &str, args: &[&str]) -> Result<String, VolumeError> {
    let command = format!("{program} {}", args.join(" "));
    tracing::debug!(%command, "volume command");
    let out = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| VolumeError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(VolumeError::Command { command, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` is a mount point, read from `/proc/self/mountinfo` (field 5).
async fn is_mounted(path: &Path) -> Result<bool, VolumeError> {
    let info = Path::new("/proc/self/mountinfo");
    let text = tokio::fs::read_to_string(info).await.map_err(io(info))?;
    let wanted = path.to_string_lossy();
    Ok(text
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_ref())))
}

/// A host folder per member under `root`, without a size of its own.
#[derive(Clone, Debug)]
pub struct FixedVolumes {
    root: PathBuf,
}

impl FixedVolumes {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FixedVolumes { root: root.into() }
    }

    fn path(&self, member: &str) -> PathBuf {
        self.root.join(member)
    }
}

#[async_trait]
impl VolumeProvider for FixedVolumes {
    fn kind(&self) -> &'static str {
        "fixed"
    }

    fn can_grow(&self) -> bool {
        false
    }

    async fn ensure(&self, member: &str, _bytes: u64) -> Result<Volume, VolumeError> {
        let path = self.path(member);
        tokio::fs::create_dir_all(&path).await.map_err(io(&path))?;
        Ok(Volume {
            host_path: path,
            size_bytes: 0,
        })
    }

    async fn grow(&self, _member: &str, _bytes: u64) -> Result<(), VolumeError> {
        Err(VolumeError::CannotGrow)
    }

    async fn usage(&self, _member: &str) -> Result<Option<VolumeUsage>, VolumeError> {
        Ok(None)
    }

    async fn size(&self, member: &str) -> Option<u64> {
        tokio::fs::metadata(self.path(member)).await.ok().map(|_| 0)
    }

    async fn release(&self, _member: &str) -> Result<(), VolumeError> {
        Ok(())
    }

    async fn delete(&self, member: &str) -> Result<(), VolumeError> {
        let path = self.path(member);
        match tokio::fs::remove_dir_all(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }
}

/// A loop-mounted XFS image per member: `root/<member>.img` mounted on `root/<member>/`.
#[derive(Clone, Debug)]
pub struct LoopXfsVolumes {
    root: PathBuf,
}

impl LoopXfsVolumes {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LoopXfsVolumes { root: root.into() }
    }

    pub fn image(&self, member: &str) -> PathBuf {
        self.root.join(format!("{member}.img"))
    }

    pub fn mount_point(&self, member: &str) -> PathBuf {
        self.root.join(member)
    }

    /// The loop device holding the member's image (`/dev/loopN`), if attached.
    pub async fn loop_device(&self, member: &str) -> Result<Option<String>, VolumeError> {
        let img = self.image(member);
        let out = run("losetup", &["-j", &img.to_string_lossy()]).await?;
        // `/dev/loop3: [65024]:886099 (/path/img)`
        Ok(out
            .lines()
            .next()
            .and_then(|l| l.split(':').next())
            .map(str::to_string))
    }
}

#[async_trait]
impl VolumeProvider for LoopXfsVolumes {
    fn kind(&self) -> &'static str {
        "loop-xfs"
    }

    fn can_grow(&self) -> bool {
        true
    }

    async fn ensure(&self, member: &str, bytes: u64) -> Result<Volume, VolumeError> {
        let img = self.image(member);
        let mnt = self.mount_point(member);
        let fresh = tokio::fs::metadata(&img).await.is_err();
        // Refused before anything is made: no empty mount point is left behind.
        if fresh && bytes < XFS_MIN_BYTES {
            return Err(VolumeError::TooSmall { wanted: bytes });
        }
        tokio::fs::create_dir_all(&mnt).await.map_err(io(&mnt))?;
        if fresh {
            let img_s = img.to_string_lossy();
            run("truncate", &["-s", &bytes.to_string(), &img_s]).await?;
            if let Err(e) = run("mkfs.xfs", &["-q", &img_s]).await {
                // No half-made image: the next ensure must not mount an empty file.
                let _ = tokio::fs::remove_file(&img).await;
                return Err(e);
            }
        }
        if !is_mounted(&mnt).await? {
            // `-o loop` attaches a loop device that is freed again at unmount (autoclear).
            run(
                "mount",
                &["-o", "loop", &img.to_string_lossy(), &mnt.to_string_lossy()],
            )
            .await?;
        }
        let size = tokio::fs::metadata(&img).await.map_err(io(&img))?.len();
        Ok(Volume {
            host_path: mnt,
            size_bytes: size,
        })
    }

    async fn grow(&self, member: &str, bytes: u64) -> Result<(), VolumeError> {
        let img = self.image(member);
        let current = tokio::fs::metadata(&img)
            .await
            .map_err(|_| VolumeError::Missing(member.into()))?
            .len();
        if bytes < current {
            return Err(VolumeError::Shrink {
                current,
                wanted: bytes,
            });
        }
        if bytes == current {
            return Ok(());
        }
        let device = self
            .loop_device(member)
            .await?
            .ok_or_else(|| VolumeError::Missing(member.into()))?;
        run(
            "truncate",
            &["-s", &bytes.to_string(), &img.to_string_lossy()],
        )
        .await?;
        run("losetup", &["-c", &device]).await?;
        run("xfs_growfs", &[&self.mount_point(member).to_string_lossy()]).await?;
        tracing::info!(member, bytes, device, "loop-xfs volume grown");
        Ok(())
    }

    async fn usage(&self, member: &str) -> Result<Option<VolumeUsage>, VolumeError> {
        let mnt = self.mount_point(member);
        if !is_mounted(&mnt).await? {
            return Ok(None);
        }
        let img = self.image(member);
        let size_bytes = tokio::fs::metadata(&img).await.map_err(io(&img))?.len();
        let command = "df -B1 --output=avail";
        let out = run("df", &["-B1", "--output=avail", &mnt.to_string_lossy()]).await?;
        let avail: u64 = out
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| VolumeError::Parse {
                command: command.into(),
                output: out.clone(),
            })?;
        Ok(Some(VolumeUsage {
            used_bytes: size_bytes.saturating_sub(avail),
            size_bytes,
        }))
    }

    async fn size(&self, member: &str) -> Option<u64> {
        tokio::fs::metadata(self.image(member))
            .await
            .ok()
            .map(|m| m.len())
    }

    async fn release(&self, member: &str) -> Result<(), VolumeError> {
        let mnt = self.mount_point(member);
        if is_mounted(&mnt).await? {
            run("umount", &[&mnt.to_string_lossy()]).await?;
        }
        Ok(())
    }

    async fn delete(&self, member: &str) -> Result<(), VolumeError> {
        self.release(member).await?;
        let img = self.image(member);
        let mnt = self.mount_point(member);
        for result in [
            tokio::fs::remove_file(&img).await.map_err(io(&img)),
            tokio::fs::remove_dir(&mnt).await.map_err(io(&mnt)),
        ] {
            match result {
                Err(VolumeError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }
}
