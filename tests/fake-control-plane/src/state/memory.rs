//! Skill versions and archives; memory stores and their validation rules.

use super::*;

impl State {
    pub(crate) fn add_skill_version(
        &mut self,
        skill_id: &str,
        name: &str,
        archive: Bytes,
        now: SystemTime,
    ) -> String {
        let micros = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
            .max(self.last_skill_version + 1);
        self.last_skill_version = micros;
        let version = SkillVersion {
            id: micros.to_string(),
            kind: "skill_version".into(),
            skill_id: skill_id.to_owned(),
            name: name.to_owned(),
            description: format!("fake skill {name}"),
            created_at: rfc3339(now),
        };
        let id = version.id.clone();
        self.skills
            .entry(skill_id.to_owned())
            .or_default()
            .push(SkillEntry { version, archive });
        id
    }

    pub(super) fn skill_version(
        &self,
        skill_id: &str,
        version: &str,
    ) -> Result<&SkillEntry, ApiError> {
        let versions = self
            .skills
            .get(skill_id)
            .ok_or_else(|| ApiError::not_found(format!("skill {skill_id} not found")))?;
        let found = if version == "latest" {
            versions.last()
        } else {
            versions.iter().find(|v| v.version.id == version)
        };
        found.ok_or_else(|| ApiError::not_found(format!("skill version {version} not found")))
    }

    pub(crate) fn create_store(&mut self, name: &str) -> String {
        let id = new_id("memstore");
        self.stores.insert(
            id.clone(),
            StoreEntry {
                name: name.to_owned(),
                memories: BTreeMap::new(),
            },
        );
        id
    }

    pub(super) fn store_mut(&mut self, store_id: &str) -> Result<&mut StoreEntry, ApiError> {
        self.stores
            .get_mut(store_id)
            .ok_or_else(|| ApiError::not_found(format!("memory store {store_id} not found")))
    }

    /// Creates or overwrites the memory at `path` (a "remote" edit).
    pub(crate) fn put_memory(
        &mut self,
        store_id: &str,
        path: &str,
        content: &str,
        now: SystemTime,
    ) -> Result<String, ApiError> {
        let store = self.store_mut(store_id)?;
        if let Some(m) = store.memories.values_mut().find(|m| m.path == path) {
            m.content = content.to_owned();
            m.version_id = new_id("memver");
            m.updated_at = now;
            return Ok(m.id.clone());
        }
        let mem = MemEntry {
            id: new_id("mem"),
            path: path.to_owned(),
            content: content.to_owned(),
            version_id: new_id("memver"),
            created_at: now,
            updated_at: now,
        };
        let id = mem.id.clone();
        store.memories.insert(id.clone(), mem);
        Ok(id)
    }

    /// Deletes the memory at `path`; true if there was one.
    pub(crate) fn remove_memory(&mut self, store_id: &str, path: &str) -> bool {
        self.stores.get_mut(store_id).is_some_and(|s| {
            let before = s.memories.len();
            s.memories.retain(|_, m| m.path != path);
            s.memories.len() != before
        })
    }

    /// `(path, content)` of every memory of a store, sorted by path.
    pub(crate) fn memory_contents(&self, store_id: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .stores
            .get(store_id)
            .map(|s| {
                s.memories
                    .values()
                    .map(|m| (m.path.clone(), m.content.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    pub(super) fn view_full(ctx: &Ctx<'_>, default_full: bool) -> Result<bool, ApiError> {
        match ctx.param("view") {
            None => Ok(default_full),
            Some("full") => Ok(true),
            Some("basic") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!("invalid view {v:?}"))),
        }
    }

    pub(super) fn memory_list(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, false)?;
        let mut limit = parse_limit(ctx.param("limit"), 20, 100)?;
        if full {
            limit = limit.min(20);
        }
        let start = parse_cursor(ctx.param("page"), "mlp_")?;
        let prefix = ctx.param("path_prefix").unwrap_or("/").to_owned();
        if !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(ApiError::bad_request(
                "path_prefix must start and end with '/'",
            ));
        }
        let depth: usize = match ctx.param("depth") {
            None => 0,
            Some(d) => d
                .parse()
                .map_err(|_| ApiError::bad_request("depth must be a non-negative integer"))?,
        };
        let store_id = ctx.route.owner.clone();
        let store = self.store_mut(&store_id)?;
        let mut mems: Vec<&MemEntry> = store
            .memories
            .values()
            .filter(|m| m.path.starts_with(&prefix))
            .collect();
        mems.sort_by(|a, b| a.path.cmp(&b.path));
        let mut items: Vec<Value> = Vec::new();
        let mut seen_prefixes = std::collections::HashSet::new();
        for m in mems {
            let rel = &m.path[prefix.len()..];
            let segs: Vec<&str> = rel.split('/').collect();
            if depth > 0 && segs.len() > depth {
                let p = format!("{prefix}{}/", segs[..depth].join("/"));
                if seen_prefixes.insert(p.clone()) {
                    items.push(
                        serde_json::to_value(MemoryPrefix {
                            kind: "memory_prefix".into(),
                            path: p,
                        })
                        .unwrap_or_default(),
                    );
                }
            } else {
                items.push(serde_json::to_value(m.to_wire(&store_id, full)).unwrap_or_default());
            }
        }
        Reply::json(&paginate(items, start, limit, "mlp_"))
    }

    pub(super) fn memory_retrieve(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, true)?;
        let store_id = ctx.route.owner.clone();
        let store = self.store_mut(&store_id)?;
        let m = store
            .memories
            .get(ctx.item())
            .ok_or_else(|| ApiError::not_found("memory not found"))?;
        Reply::json(&m.to_wire(&store_id, full))
    }

    pub(super) fn memory_create(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, false)?;
        let params: MemoryCreateParams = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        validate_memory_path(&params.path)?;
        let content = params.content.unwrap_or_default();
        validate_memory_content(&content)?;
        let store_id = ctx.route.owner.clone();
        let now = ctx.now;
        let store = self.store_mut(&store_id)?;
        if store.memories.values().any(|m| m.path == params.path) {
            return Err(ApiError::new(
                409,
                "memory_path_conflict_error",
                "a memory already exists at this path",
            )
            .code("memory_path_conflict"));
        }
        if store.memories.len() >= MAX_MEMORIES {
            return Err(ApiError::bad_request("the memory store is full").code("memory_store_full"));
        }
        let mem = MemEntry {
            id: new_id("mem"),
            path: params.path,
            content,
            version_id: new_id("memver"),
            created_at: now,
            updated_at: now,
        };
        let wire = mem.to_wire(&store_id, full);
        store.memories.insert(mem.id.clone(), mem);
        Reply::json(&wire)
    }

    pub(super) fn memory_update(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, false)?;
        let params: MemoryUpdateParams = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        if let Some(p) = &params.path {
            validate_memory_path(p)?;
        }
        if let Some(c) = &params.content {
            validate_memory_content(c)?;
        }
        let store_id = ctx.route.owner.clone();
        let mem_id = ctx.item().to_owned();
        let now = ctx.now;
        let store = self.store_mut(&store_id)?;
        if let Some(p) = &params.path
            && store
                .memories
                .values()
                .any(|m| &m.path == p && m.id != mem_id)
        {
            return Err(ApiError::new(
                409,
                "memory_path_conflict_error",
                "a memory already exists at this path",
            )
            .code("memory_path_conflict"));
        }
        let m = store
            .memories
            .get_mut(&mem_id)
            .ok_or_else(|| ApiError::not_found("memory not found"))?;
        if let Some(pre) = &params.precondition {
            if pre.kind != "content_sha256" {
                return Err(ApiError::bad_request("unknown precondition type"));
            }
            if pre.content_sha256.as_deref() != Some(sha256_hex(&m.content).as_str()) {
                return Err(ApiError::new(
                    409,
                    "memory_precondition_failed_error",
                    "content_sha256 does not match the stored content",
                )
                .code("memory_precondition_failed"));
            }
        }
        if let Some(c) = params.content {
            m.content = c;
        }
        if let Some(p) = params.path {
            m.path = p;
        }
        m.version_id = new_id("memver");
        m.updated_at = now;
        Reply::json(&m.to_wire(&store_id, full))
    }

    pub(super) fn memory_delete(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let expected = ctx.param("expected_content_sha256").map(str::to_owned);
        let mem_id = ctx.item().to_owned();
        let store = self.store_mut(&ctx.route.owner.clone())?;
        let m = store
            .memories
            .get(&mem_id)
            .ok_or_else(|| ApiError::not_found("memory not found"))?;
        if let Some(e) = expected
            && e != sha256_hex(&m.content)
        {
            return Err(ApiError::new(
                409,
                "memory_precondition_failed_error",
                "expected_content_sha256 does not match the stored content",
            )
            .code("memory_precondition_failed"));
        }
        store.memories.remove(&mem_id);
        Reply::json(&DeletedMemory {
            id: mem_id,
            kind: "memory_deleted".into(),
        })
    }

    /// Ids of the memory stores attached to a session, in resource order.
    pub(crate) fn session_store_ids(&self, session_id: &str) -> Vec<String> {
        self.sessions
            .get(session_id)
            .map(|s| {
                s.resources
                    .iter()
                    .filter_map(|r| r.get("memory_store_id").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Name of a memory store, for reports.
    pub(crate) fn store_name(&self, store_id: &str) -> Option<&str> {
        self.stores.get(store_id).map(|s| s.name.as_str())
    }
}

pub(super) fn archive_content_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"PK") {
        "application/zip"
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

pub(super) fn validate_memory_path(path: &str) -> Result<(), ApiError> {
    let bad = |m: &str| {
        Err(ApiError::bad_request(format!("invalid memory path: {m}")).code("invalid_memory_path"))
    };
    if !path.starts_with('/') {
        return bad("must start with '/'");
    }
    if path.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    if segs.is_empty() || segs.len() > 20 {
        return bad("needs 1 to 20 segments");
    }
    if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return bad("empty, '.' or '..' segment");
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return bad("control characters");
    }
    Ok(())
}

pub(super) fn validate_memory_content(content: &str) -> Result<(), ApiError> {
    if content.len() > MAX_MEMORY_BYTES {
        return Err(ApiError::new(
            413,
            "invalid_request_error",
            format!(
                "memory content is {} bytes; the limit is {MAX_MEMORY_BYTES}",
                content.len()
            ),
        )
        .code("memory_content_too_large"));
    }
    Ok(())
}
