//! Writing members below the destination, one `O_NOFOLLOW` component at a time.

use super::*;

/// Writes members below `root`, one `O_NOFOLLOW` component at a time.
pub(super) struct TreeWriter<'a> {
    pub(super) root: &'a Dir,
}

impl TreeWriter<'_> {
    fn open_or_create_dir(parent: &Dir, name: &[u8], member: &[u8]) -> Result<Dir, ExtractError> {
        let name = OsStr::from_bytes(name);
        match parent.open_dir_nofollow(name) {
            Ok(dir) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io_err(format!(
                    "opening a directory for member {:?}",
                    lossy(member)
                ))(e));
            }
        }
        let mut builder = DirBuilder::new();
        builder.mode(DIR_MODE);
        parent
            .create_dir_with(name, &builder)
            .map_err(io_err(format!(
                "creating a directory for member {:?}",
                lossy(member)
            )))?;
        // Exactly 0700 whatever the umask.
        parent
            .set_permissions(name, Permissions::from_mode(DIR_MODE))
            .map_err(io_err(format!(
                "setting the mode of a directory for member {:?}",
                lossy(member)
            )))?;
        parent.open_dir_nofollow(name).map_err(io_err(format!(
            "opening a directory for member {:?}",
            lossy(member)
        )))
    }

    fn dirs(&self, parts: &[Vec<u8>], member: &[u8]) -> Result<Dir, ExtractError> {
        let mut dir = self
            .root
            .try_clone()
            .map_err(io_err("duplicating the destination handle"))?;
        for part in parts {
            dir = Self::open_or_create_dir(&dir, part, member)?;
        }
        Ok(dir)
    }

    pub(super) fn dir(&mut self, parts: &[Vec<u8>], member: &[u8]) -> Result<(), ExtractError> {
        self.dirs(parts, member).map(drop)
    }

    pub(super) fn file(
        &mut self,
        parts: &[Vec<u8>],
        member: &[u8],
        executable: bool,
        src: &mut dyn Read,
        budget: &mut Budget<'_>,
    ) -> Result<u64, ExtractError> {
        let Some((name, parents)) = parts.split_last() else {
            return Ok(0);
        };
        let parent = self.dirs(parents, member)?;
        let file = parent
            .open_with(
                OsStr::from_bytes(name),
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .follow(FollowSymlinks::No)
                    .mode(0o600),
            )
            .map_err(io_err(format!(
                "creating the file for member {:?}",
                lossy(member)
            )))?;
        let mut out = io::BufWriter::new(file);
        let written = budget.copy(member, src, &mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| io_err(format!("writing member {:?}", lossy(member)))(e.into_error()))?;
        let mode = if executable {
            EXEC_FILE_MODE
        } else {
            FILE_MODE
        };
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err(format!(
                "setting the mode of member {:?}",
                lossy(member)
            )))?;
        Ok(written)
    }
}
