//! Per-session skill installation (`_skills.py:200-281`, `agent_toolset.py:306-341`).
//!
//! The worker resolves each skill version (the `latest` alias included) and opens the archive
//! download; [`SkillsManager`] takes it from there:
//!
//! 1. the directory name is `basename(version.name.strip())` with the skill-id fallback
//!    ([`crate::skill_dir_name`]);
//! 2. `<workdir>/skills` is created lazily (mode `0700`) and opened without following a
//!    symlink (hardening: the reference follows a symlinked `skills` dir and then checks that
//!    the resolved target stays inside it);
//! 3. a private work directory `.skill-<random>` (mode `0700`) is made beside the target; the
//!    archive stream is spooled into it (never buffered in memory), bounded by
//!    [`ExtractLimits::max_archive_bytes`], with progress logged every
//!    [`SkillsManager::DEFAULT_PROGRESS_STEP`] bytes;
//! 4. the archive is extracted into `.skill-*/stage` ([`crate::extract`]);
//! 5. an older `<name>` is renamed into the work directory, `stage` is renamed to `<name>`,
//!    and the work directory is removed whatever happened. A failure before step 5 leaves an
//!    existing `<name>` as it was;
//! 6. `SKILL.md` is read and validated; problems are logged and reported in
//!    [`InstalledSkill::manifest`] but do not undo the installation (the reference does not
//!    read `SKILL.md` at all).
//!
//! A failure on one skill is logged and recorded ([`SkillsManager::failures`]) and the session
//! goes on. [`SkillsManager::teardown`] removes exactly the skill directories this manager
//! installed (the `skills` root stays), through the directory handle opened at install time,
//! so a guest that replaced `skills` or a skill directory with a symlink cannot redirect the
//! removal. Nothing is cached across sessions: every manager starts empty and downloads
//! everything again.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{
    Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::extract::{self, DIR_MODE, ExtractError, ExtractStats};
use crate::limits::ExtractLimits;
use crate::manifest::{self, ManifestError, SkillManifest};
use crate::names::{NameEscapes, skill_dir_name};

/// Name of the skills root inside the workdir.
pub const SKILLS_DIR: &str = "skills";
/// Prefix of the per-install work directories.
pub const WORK_DIR_PREFIX: &str = ".skill-";
const SPOOL_NAME: &str = "archive";
const STAGE_NAME: &str = "stage";
const REPLACED_NAME: &str = "replaced";
const SPOOL_BUF_BYTES: usize = 64 * 1024;

/// One skill version, already resolved by the worker (`GET /v1/skills/{id}/versions/{v}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillDescriptor {
    /// `skill_id`.
    pub skill_id: String,
    /// The concrete version id (never the `latest` alias).
    pub version_id: String,
    /// The version's `name` (the skill's slug).
    pub name: String,
    /// The download's size when known (e.g. `Content-Length`), for progress logs only.
    pub size_hint: Option<u64>,
}

/// A skill this manager installed.
#[derive(Clone, Debug)]
pub struct InstalledSkill {
    /// `skill_id`.
    pub skill_id: String,
    /// The concrete version id.
    pub version_id: String,
    /// The directory name under `<workdir>/skills`.
    pub dir_name: String,
    /// `<workdir>/skills/<dir_name>` (for logs and prompts; all access goes through handles).
    pub path: PathBuf,
    /// Size of the downloaded archive.
    pub archive_bytes: u64,
    /// What extraction produced.
    pub stats: ExtractStats,
    /// The `SKILL.md` front matter, or why it is unusable.
    pub manifest: Result<SkillManifest, ManifestError>,
}

/// A skill that could not be installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillFailure {
    /// `skill_id`.
    pub skill_id: String,
    /// The version id, when it was resolved.
    pub version_id: Option<String>,
    /// What went wrong.
    pub error: String,
}

/// Why one skill could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkillError {
    /// The skill's directory name would not be a single path component.
    #[error(transparent)]
    NameEscapes(#[from] NameEscapes),
    /// The archive stream failed while downloading.
    #[error("reading the skill archive: {0}")]
    Download(#[source] io::Error),
    /// The archive was refused or could not be extracted.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// A filesystem operation around extraction failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The blocking extraction task panicked or was cancelled.
    #[error("the extraction task failed: {0}")]
    Task(String),
}

fn io_ctx(context: &'static str) -> impl FnOnce(io::Error) -> SkillError {
    move |source| SkillError::Io { context, source }
}

/// Installs one session's skills into `<workdir>/skills/<name>/` and removes them at teardown.
///
/// One manager per session (per claimed work item); it is never shared or reused, which is
/// what keeps skills fresh per session and apart between tenants.
pub struct SkillsManager {
    workdir: PathBuf,
    workdir_dir: Dir,
    skills_root: Option<Dir>,
    limits: ExtractLimits,
    progress_step: u64,
    installed: Vec<InstalledSkill>,
    failures: Vec<SkillFailure>,
    created: Vec<String>,
}

impl fmt::Debug for SkillsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkillsManager")
            .field("workdir", &self.workdir)
            .field("limits", &self.limits)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl SkillsManager {
    /// Progress is logged every 8 MiB of download.
    pub const DEFAULT_PROGRESS_STEP: u64 = 8 * 1024 * 1024;

    /// A manager for the session whose working directory is `workdir` (which must exist).
    pub fn new(workdir: impl Into<PathBuf>, limits: ExtractLimits) -> io::Result<Self> {
        let workdir = workdir.into();
        let workdir_dir = Dir::open_ambient_dir(&workdir, ambient_authority())?;
        Ok(Self {
            workdir,
            workdir_dir,
            skills_root: None,
            limits,
            progress_step: Self::DEFAULT_PROGRESS_STEP,
            installed: Vec::new(),
            failures: Vec::new(),
            created: Vec::new(),
        })
    }

    /// Sets how many downloaded bytes pass between progress log lines (minimum 1).
    #[must_use]
    pub fn with_progress_step(mut self, bytes: u64) -> Self {
        self.progress_step = bytes.max(1);
        self
    }

    /// `<workdir>/skills`.
    pub fn skills_root_path(&self) -> PathBuf {
        self.workdir.join(SKILLS_DIR)
    }

    /// The limits in force.
    pub fn limits(&self) -> &ExtractLimits {
        &self.limits
    }

    /// Skills installed so far, in install order (a later install under the same directory
    /// name replaces the earlier record).
    pub fn installed(&self) -> &[InstalledSkill] {
        &self.installed
    }

    /// Skills that failed, in order.
    pub fn failures(&self) -> &[SkillFailure] {
        &self.failures
    }

    /// Records (and logs) a failure that happened before an archive stream existed, e.g.
    /// resolving the version or opening the download, so [`Self::failures`] is complete.
    pub fn record_failure(
        &mut self,
        skill_id: &str,
        version_id: Option<&str>,
        error: &dyn fmt::Display,
    ) {
        tracing::warn!(skill_id, version_id, "failed to download skill: {error}");
        self.failures.push(SkillFailure {
            skill_id: skill_id.to_owned(),
            version_id: version_id.map(str::to_owned),
            error: error.to_string(),
        });
    }

    /// Opens (creating if needed) `<workdir>/skills`, refusing a symlink there.
    fn skills_root(&mut self) -> Result<Dir, SkillError> {
        if let Some(root) = &self.skills_root {
            return root
                .try_clone()
                .map_err(io_ctx("duplicating the skills dir handle"));
        }
        let mut builder = DirBuilder::new();
        builder.mode(DIR_MODE);
        match self.workdir_dir.create_dir_with(SKILLS_DIR, &builder) {
            Ok(()) => {
                self.workdir_dir
                    .set_permissions(SKILLS_DIR, Permissions::from_mode(DIR_MODE))
                    .map_err(io_ctx("setting the skills dir mode"))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_ctx("creating the skills dir")(e)),
        }
        let root = self
            .workdir_dir
            .open_dir_nofollow(SKILLS_DIR)
            .map_err(io_ctx(
                "opening the skills dir (it must be a directory, not a symlink)",
            ))?;
        let handle = root
            .try_clone()
            .map_err(io_ctx("duplicating the skills dir handle"))?;
        self.skills_root = Some(root);
        Ok(handle)
    }

    /// Installs one skill from a blocking archive stream. On error nothing is left behind and
    /// an existing directory of the same name is untouched; the error is returned, not
    /// recorded (see [`Self::install_or_log`]).
    pub fn install(
        &mut self,
        skill: &SkillDescriptor,
        mut archive: impl Read,
    ) -> Result<&InstalledSkill, SkillError> {
        let dir_name = skill_dir_name(&skill.name, &skill.skill_id)?;
        let root = self.skills_root()?;
        let work = WorkDir::create(&root)?;
        let spool = work.create_spool()?;
        let mut progress = Progress::new(skill, self.progress_step);
        let mut buf = vec![0_u8; SPOOL_BUF_BYTES];
        let mut out = io::BufWriter::new(&spool);
        loop {
            let n = match archive.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SkillError::Download(e)),
            };
            progress.advance(n as u64, &self.limits)?;
            out.write_all(&buf[..n])
                .map_err(io_ctx("writing the archive spool file"))?;
        }
        out.flush()
            .map_err(io_ctx("writing the archive spool file"))?;
        drop(out);
        progress.done();
        let limits = self.limits;
        let (stats, manifest) = finish_install(&root, work, &spool, &dir_name, &limits)?;
        Ok(self.record(skill, dir_name, progress.total, stats, manifest))
    }

    /// Installs one skill from an async archive stream: the download is spooled with async
    /// I/O, extraction runs on tokio's blocking pool. Same guarantees as [`Self::install`].
    pub async fn install_async<R: AsyncRead + Unpin>(
        &mut self,
        skill: &SkillDescriptor,
        mut archive: R,
    ) -> Result<&InstalledSkill, SkillError> {
        let dir_name = skill_dir_name(&skill.name, &skill.skill_id)?;
        let root = self.skills_root()?;
        let work = WorkDir::create(&root)?;
        let spool = work.create_spool()?;
        let mut progress = Progress::new(skill, self.progress_step);
        let mut out = tokio::fs::File::from_std(
            spool
                .try_clone()
                .map_err(io_ctx("duplicating the spool file"))?,
        );
        let mut buf = vec![0_u8; SPOOL_BUF_BYTES];
        loop {
            let n = match archive.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SkillError::Download(e)),
            };
            progress.advance(n as u64, &self.limits)?;
            out.write_all(&buf[..n])
                .await
                .map_err(io_ctx("writing the archive spool file"))?;
        }
        out.flush()
            .await
            .map_err(io_ctx("writing the archive spool file"))?;
        drop(out);
        progress.done();
        let limits = self.limits;
        let name = dir_name.clone();
        let (stats, manifest) = tokio::task::spawn_blocking(move || {
            finish_install(&root, work, &spool, &name, &limits)
        })
        .await
        .map_err(|e| SkillError::Task(e.to_string()))??;
        Ok(self.record(skill, dir_name, progress.total, stats, manifest))
    }

    /// [`Self::install`], logging and recording a failure instead of returning it.
    pub fn install_or_log(&mut self, skill: &SkillDescriptor, archive: impl Read) -> bool {
        match self.install(skill, archive) {
            Ok(_) => true,
            Err(e) => {
                self.record_failure(&skill.skill_id, Some(&skill.version_id), &e);
                false
            }
        }
    }

    /// [`Self::install_async`], logging and recording a failure instead of returning it.
    pub async fn install_async_or_log<R: AsyncRead + Unpin>(
        &mut self,
        skill: &SkillDescriptor,
        archive: R,
    ) -> bool {
        match self.install_async(skill, archive).await {
            Ok(_) => true,
            Err(e) => {
                self.record_failure(&skill.skill_id, Some(&skill.version_id), &e);
                false
            }
        }
    }

    fn record(
        &mut self,
        skill: &SkillDescriptor,
        dir_name: String,
        archive_bytes: u64,
        stats: ExtractStats,
        manifest: Result<SkillManifest, ManifestError>,
    ) -> &InstalledSkill {
        let path = self.skills_root_path().join(&dir_name);
        tracing::info!(
            skill_id = %skill.skill_id,
            version = %skill.version_id,
            files = stats.files,
            bytes = stats.bytes,
            "downloaded skill -> {}",
            path.display()
        );
        if !stats.skipped.is_empty() {
            tracing::info!(
                skill_id = %skill.skill_id,
                "skipped {} archive members that are not regular files or directories",
                stats.skipped.len()
            );
        }
        match &manifest {
            Ok(m) if m.name != dir_name => tracing::warn!(
                skill_id = %skill.skill_id,
                "SKILL.md name {:?} differs from the skill directory {:?}",
                m.name,
                dir_name
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(skill_id = %skill.skill_id, "skill has a bad SKILL.md: {e}"),
        }
        if !self.created.contains(&dir_name) {
            self.created.push(dir_name.clone());
        }
        self.installed.retain(|s| s.dir_name != dir_name);
        self.installed.push(InstalledSkill {
            skill_id: skill.skill_id.clone(),
            version_id: skill.version_id.clone(),
            dir_name,
            path,
            archive_bytes,
            stats,
            manifest,
        });
        let last = self.installed.len() - 1;
        &self.installed[last]
    }

    /// Removes every skill directory this manager installed (not the `skills` root, nor
    /// anything it did not create). Returns the paths that could not be removed.
    pub fn teardown(&mut self) -> Vec<(PathBuf, io::Error)> {
        let mut errors = Vec::new();
        let Some(root) = &self.skills_root else {
            self.created.clear();
            return errors;
        };
        for name in self.created.drain(..) {
            let path = self.workdir.join(SKILLS_DIR).join(&name);
            let result = match root.symlink_metadata(&name) {
                Ok(meta) if meta.is_dir() => wasm_sandbox_fs::tree::remove_tree_at(root, &name),
                // Whatever replaced the directory (a symlink, a file) is removed itself; a
                // symlink's target is never touched.
                Ok(_) => root.remove_file(&name),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tracing::info!("removed skill dir {}", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(
                        "failed to remove downloaded skill dir {}: {e}",
                        path.display()
                    );
                    errors.push((path, e));
                }
            }
        }
        self.installed.clear();
        errors
    }
}

impl Drop for SkillsManager {
    fn drop(&mut self) {
        if !self.created.is_empty() {
            tracing::warn!("SkillsManager dropped without teardown; removing its skill dirs now");
            self.teardown();
        }
    }
}

/// Download byte counting: the archive size limit and progress logs.
struct Progress<'a> {
    skill: &'a SkillDescriptor,
    step: u64,
    next_log: u64,
    total: u64,
}

impl<'a> Progress<'a> {
    fn new(skill: &'a SkillDescriptor, step: u64) -> Self {
        Self {
            skill,
            step,
            next_log: step,
            total: 0,
        }
    }

    fn advance(&mut self, n: u64, limits: &ExtractLimits) -> Result<(), SkillError> {
        self.total += n;
        if self.total > limits.max_archive_bytes {
            return Err(ExtractError::ArchiveTooLarge {
                limit: limits.max_archive_bytes,
            }
            .into());
        }
        if self.total >= self.next_log {
            let expected = self
                .skill
                .size_hint
                .map(|s| format!(" of {:.1} MiB", mib(s)))
                .unwrap_or_default();
            tracing::info!(
                skill_id = %self.skill.skill_id,
                version = %self.skill.version_id,
                "downloading skill archive: {:.1} MiB{expected}",
                mib(self.total)
            );
            while self.next_log <= self.total {
                self.next_log = self.next_log.saturating_add(self.step);
            }
        }
        Ok(())
    }

    fn done(&self) {
        if self.total >= self.step {
            tracing::info!(
                skill_id = %self.skill.skill_id,
                version = %self.skill.version_id,
                "downloaded skill archive: {:.1} MiB",
                mib(self.total)
            );
        } else {
            tracing::debug!(skill_id = %self.skill.skill_id, bytes = self.total, "downloaded skill archive");
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "a log line's MiB figure")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A `.skill-*` work directory; removed (with everything in it) when dropped.
struct WorkDir {
    parent: Dir,
    name: String,
    dir: Dir,
}

impl WorkDir {
    fn create(parent: &Dir) -> Result<Self, SkillError> {
        let mut builder = DirBuilder::new();
        builder.mode(DIR_MODE);
        let name = format!("{WORK_DIR_PREFIX}{}", uuid::Uuid::new_v4().simple());
        parent
            .create_dir_with(&name, &builder)
            .map_err(io_ctx("creating the skill work dir"))?;
        parent
            .set_permissions(&name, Permissions::from_mode(DIR_MODE))
            .map_err(io_ctx("setting the skill work dir mode"))?;
        let dir = parent
            .open_dir_nofollow(&name)
            .map_err(io_ctx("opening the skill work dir"))?;
        let parent = parent
            .try_clone()
            .map_err(io_ctx("duplicating the skills dir handle"))?;
        Ok(Self { parent, name, dir })
    }

    fn create_spool(&self) -> Result<File, SkillError> {
        self.dir
            .open_with(
                SPOOL_NAME,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .follow(FollowSymlinks::No)
                    .mode(0o600),
            )
            .map(cap_std::fs::File::into_std)
            .map_err(io_ctx("creating the archive spool file"))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = wasm_sandbox_fs::tree::remove_tree_at(&self.parent, &self.name)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("failed to remove skill work dir {}: {e}", self.name);
        }
    }
}

/// Extracts the spooled archive into `work/stage`, swaps it in as `<dir_name>`, removes the
/// work dir and reads the manifest. Blocking.
fn finish_install(
    root: &Dir,
    work: WorkDir,
    spool: &File,
    dir_name: &str,
    limits: &ExtractLimits,
) -> Result<(ExtractStats, Result<SkillManifest, ManifestError>), SkillError> {
    let mut builder = DirBuilder::new();
    builder.mode(DIR_MODE);
    work.dir
        .create_dir_with(STAGE_NAME, &builder)
        .map_err(io_ctx("creating the staging dir"))?;
    work.dir
        .set_permissions(STAGE_NAME, Permissions::from_mode(DIR_MODE))
        .map_err(io_ctx("setting the staging dir mode"))?;
    let stage = work
        .dir
        .open_dir_nofollow(STAGE_NAME)
        .map_err(io_ctx("opening the staging dir"))?;
    let stats = extract::extract_archive(spool, &stage, &work.dir, limits)?;
    drop(stage);
    match root.rename(dir_name, &work.dir, REPLACED_NAME) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_ctx("moving the previous skill dir aside")(e)),
    }
    work.dir
        .rename(STAGE_NAME, root, dir_name)
        .map_err(io_ctx("moving the extracted skill into place"))?;
    drop(work);
    let manifest = match root.open_dir_nofollow(dir_name) {
        Ok(dir) => manifest::read_manifest(&dir),
        Err(e) => Err(ManifestError::Unreadable(e.to_string())),
    };
    Ok((stats, manifest))
}

/// The directory a skill would be installed in, for callers that build prompts before
/// installing: `<workdir>/skills/<skill_dir_name(name, skill_id)>`.
pub fn skill_path(
    workdir: &Path,
    version_name: &str,
    skill_id: &str,
) -> Result<PathBuf, NameEscapes> {
    Ok(workdir
        .join(SKILLS_DIR)
        .join(skill_dir_name(version_name, skill_id)?))
}
